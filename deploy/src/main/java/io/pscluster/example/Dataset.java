package io.pscluster.example;

import java.io.BufferedReader;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * Samples for binary classification with sparse features: sample {@code i} has features {@code keys[i]} with values
 * {@code values[i]} and a label in {0, 1}.
 */
public record Dataset(long[][] keys, float[][] values, int[] labels) {
    public int size() {
        return labels.length;
    }

    /**
     * A seeded, linearly separable data set: a hidden weight per feature, {@code active} distinct features of value
     * 1 per sample, label = whether the hidden score is positive. Samples too close to the boundary are skipped, so
     * a linear model can reach 100% accuracy.
     */
    public static Dataset synthetic(final long seed, final int samples, final int features, final int active) {
        if (samples < 1 || features < active || active < 1) {
            throw new IllegalArgumentException("synthetic data needs samples >= 1 and features >= active >= 1, got "
                    + "samples=" + samples + " features=" + features + " active=" + active);
        }
        final SplittableRandom random = new SplittableRandom(seed);
        final double[] hidden = new double[features];
        for (int f = 0; f < features; f++) {
            hidden[f] = random.nextDouble(-1, 1);
        }
        final long[][] keys = new long[samples][];
        final float[][] values = new float[samples][];
        final int[] labels = new int[samples];
        int made = 0;
        while (made < samples) {
            final long[] sampleKeys = random.ints(0, features)
                    .distinct()
                    .limit(active)
                    .asLongStream()
                    .toArray();
            double score = 0;
            for (final long key : sampleKeys) {
                score += hidden[(int) key];
            }
            if (Math.abs(score) < 0.2) {
                continue;
            }
            keys[made] = sampleKeys;
            values[made] = new float[active];
            java.util.Arrays.fill(values[made], 1f);
            labels[made] = score > 0 ? 1 : 0;
            made++;
        }
        return new Dataset(keys, values, labels);
    }

    /**
     * Reads the libsvm format: one sample a line, {@code label index:value index:value ...}. Labels {@code +1}/
     * {@code 1} are positive, {@code -1}/{@code 0} negative.
     *
     * @throws IllegalArgumentException naming the file, line and token that are malformed.
     */
    public static Dataset readLibsvm(final Path file) throws IOException {
        final List<long[]> keys = new ArrayList<>();
        final List<float[]> values = new ArrayList<>();
        final List<Integer> labels = new ArrayList<>();
        try (BufferedReader reader = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            String line;
            int number = 0;
            while ((line = reader.readLine()) != null) {
                number++;
                final String trimmed = line.strip();
                if (trimmed.isEmpty() || trimmed.startsWith("#")) {
                    continue;
                }
                final String[] tokens = trimmed.split("\\s+");
                final String where = file + ":" + number;
                labels.add(parseLabel(tokens[0], where));
                final long[] sampleKeys = new long[tokens.length - 1];
                final float[] sampleValues = new float[tokens.length - 1];
                for (int t = 1; t < tokens.length; t++) {
                    final int colon = tokens[t].indexOf(':');
                    if (colon <= 0) {
                        throw new IllegalArgumentException(where + ": feature '" + tokens[t] + "' is not index:value");
                    }
                    try {
                        sampleKeys[t - 1] = Long.parseLong(tokens[t].substring(0, colon));
                        sampleValues[t - 1] = Float.parseFloat(tokens[t].substring(colon + 1));
                    } catch (NumberFormatException e) {
                        throw new IllegalArgumentException(where + ": feature '" + tokens[t] + "' is not index:value");
                    }
                    if (!Float.isFinite(sampleValues[t - 1])) {
                        throw new IllegalArgumentException(where + ": feature '" + tokens[t] + "' is not finite");
                    }
                }
                keys.add(sampleKeys);
                values.add(sampleValues);
            }
        }
        if (labels.isEmpty()) {
            throw new IllegalArgumentException(file + " holds no samples");
        }
        return new Dataset(
                keys.toArray(long[][]::new),
                values.toArray(float[][]::new),
                labels.stream().mapToInt(Integer::intValue).toArray());
    }

    private static int parseLabel(final String token, final String where) {
        final double label;
        try {
            label = Double.parseDouble(token);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(where + ": label '" + token + "' is not a number");
        }
        if (label == 1) {
            return 1;
        }
        if (label == 0 || label == -1) {
            return 0;
        }
        throw new IllegalArgumentException(where + ": label '" + token + "' must be 1, 0 or -1");
    }
}
