// Tests for engine/quant: block geometry, fp16/bf16 conversion, and (de)quantisation checked
// against independent vectors written by tests/data/quant/make_quant_vectors.py (gguf-py).
#include "engine/quant.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#ifndef CHORUS_SOURCE_DIR
#error "CHORUS_SOURCE_DIR (the repository root) must be defined to find tests/data"
#endif

namespace chorus {
namespace {

uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// One vector file; see the format at the top of make_quant_vectors.py.
struct QuantVector {
    uint32_t type = 0;
    uint32_t n_elems = 0;
    bool has_input = false;
    std::vector<float> input;        // [n_elems] if has_input
    std::vector<uint8_t> raw;        // GGUF blocks
    std::vector<float> dequantised;  // [n_elems], gguf.quants.dequantize(raw)
};

std::string vector_path(GgmlType t) {
    return std::string(CHORUS_SOURCE_DIR) + "/tests/data/quant/" + type_traits(t).name + ".bin";
}

// Loads the vector for t; on any problem records a failure naming the file and the fix.
bool load_vector(GgmlType t, QuantVector& v) {
    const std::string path = vector_path(t);
    const std::string fix = "; regenerate with `pip install gguf numpy && python3 "
                            "tests/data/quant/make_quant_vectors.py` from the repository root";
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        ADD_FAILURE() << "missing vector file " << path << fix;
        return false;
    }
    char magic[4];
    uint32_t header[4];
    f.read(magic, 4);
    f.read(reinterpret_cast<char*>(header), sizeof header);
    if (!f || std::memcmp(magic, "CQV1", 4) != 0) {
        ADD_FAILURE() << path << ": bad header (expected magic CQV1)" << fix;
        return false;
    }
    v.type = header[0];
    v.n_elems = header[1];
    v.has_input = header[2] != 0;
    v.raw.resize(header[3]);
    v.dequantised.resize(v.n_elems);
    if (v.has_input) {
        v.input.resize(v.n_elems);
        f.read(reinterpret_cast<char*>(v.input.data()), std::streamsize(v.n_elems * 4));
    }
    f.read(reinterpret_cast<char*>(v.raw.data()), std::streamsize(v.raw.size()));
    f.read(reinterpret_cast<char*>(v.dequantised.data()), std::streamsize(v.n_elems * 4));
    if (!f || f.peek() != std::char_traits<char>::eof()) {
        ADD_FAILURE() << path << ": truncated or oversized file" << fix;
        return false;
    }
    if (v.type != static_cast<uint32_t>(t) || row_bytes(t, v.n_elems) != v.raw.size()) {
        ADD_FAILURE() << path << ": header says type " << v.type << ", " << v.n_elems
                      << " elements, " << v.raw.size() << " bytes; expected type "
                      << static_cast<uint32_t>(t) << " with matching row_bytes" << fix;
        return false;
    }
    return true;
}

// Index of the first element whose bit pattern differs, or -1 (bitwise: -0 != +0, NaN == NaN).
int64_t first_bit_difference(const std::vector<float>& a, const std::vector<float>& b) {
    for (size_t i = 0; i < a.size(); ++i) {
        if (bits_of(a[i]) != bits_of(b[i])) return static_cast<int64_t>(i);
    }
    return -1;
}

// sum (x - y)^2 / sum x^2
double nmse(const std::vector<float>& x, const std::vector<float>& y) {
    double err = 0.0, ref = 0.0;
    for (size_t i = 0; i < x.size(); ++i) {
        err += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
        ref += double(x[i]) * x[i];
    }
    return err / ref;
}

std::string type_name(const testing::TestParamInfo<GgmlType>& info) {
    return type_traits(info.param).name;
}

// --- block geometry --------------------------------------------------------------------------

TEST(TypeTraits, EveryGgmlTypeHasItsGgufBlockGeometry) {
    struct Expect {
        GgmlType t;
        const char* name;
        uint32_t elems, bytes;
    };
    const Expect expected[] = {
        {GgmlType::F32, "F32", 1, 4},       {GgmlType::F16, "F16", 1, 2},
        {GgmlType::BF16, "BF16", 1, 2},     {GgmlType::Q4_0, "Q4_0", 32, 18},
        {GgmlType::Q4_1, "Q4_1", 32, 20},   {GgmlType::Q5_0, "Q5_0", 32, 22},
        {GgmlType::Q5_1, "Q5_1", 32, 24},   {GgmlType::Q8_0, "Q8_0", 32, 34},
        {GgmlType::Q8_1, "Q8_1", 32, 36},   {GgmlType::Q2_K, "Q2_K", 256, 84},
        {GgmlType::Q3_K, "Q3_K", 256, 110}, {GgmlType::Q4_K, "Q4_K", 256, 144},
        {GgmlType::Q5_K, "Q5_K", 256, 176}, {GgmlType::Q6_K, "Q6_K", 256, 210},
        {GgmlType::Q8_K, "Q8_K", 256, 292},
    };
    for (const Expect& e : expected) {
        const TypeTraits& tt = type_traits(e.t);
        EXPECT_STREQ(tt.name, e.name);
        EXPECT_EQ(tt.block_elems, e.elems) << e.name;
        EXPECT_EQ(tt.block_bytes, e.bytes) << e.name;
        EXPECT_TRUE(tt.supported) << e.name;
        EXPECT_EQ(type_traits(static_cast<uint32_t>(e.t)), &tt) << e.name;
    }
}

TEST(TypeTraits, UnknownIdsReturnNull) {
    for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 1000u, 0xFFFFFFFFu}) {
        EXPECT_EQ(type_traits(id), nullptr) << "id " << id;
    }
}

TEST(TypeTraits, KnownButUnsupportedIdsAreNamedAndMarkedUnsupported) {
    const TypeTraits* iq2 = type_traits(16);
    ASSERT_NE(iq2, nullptr);
    EXPECT_STREQ(iq2->name, "IQ2_XXS");
    EXPECT_FALSE(iq2->supported);
}

TEST(TypeTraits, WeightTypesAreListedInTheDocumentedOrder) {
    const std::vector<GgmlType> expected = {
        GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,
        GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q2_K, GgmlType::Q3_K,
        GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};
    EXPECT_EQ(weight_types(), expected);
}

TEST(RowBytes, WholeBlocksGiveBlockCountTimesBlockBytes) {
    EXPECT_EQ(row_bytes(GgmlType::F32, 0), 0u);
    EXPECT_EQ(row_bytes(GgmlType::F32, 7), 28u);
    EXPECT_EQ(row_bytes(GgmlType::BF16, 3), 6u);
    EXPECT_EQ(row_bytes(GgmlType::Q4_0, 4096), 128u * 18);
    EXPECT_EQ(row_bytes(GgmlType::Q6_K, 4096), 16u * 210);
}

TEST(RowBytes, ElementCountsThatAreNotWholeBlocksAreRejected) {
    EXPECT_EQ(row_bytes(GgmlType::Q4_0, 31), std::nullopt);
    EXPECT_EQ(row_bytes(GgmlType::Q8_0, 33), std::nullopt);
    EXPECT_EQ(row_bytes(GgmlType::Q4_K, 128), std::nullopt);
    EXPECT_EQ(row_bytes(GgmlType::Q4_K, 256 + 32), std::nullopt);
}

TEST(RowBytes, ByteCountsThatOverflowUint64AreRejected) {
    const uint64_t max = std::numeric_limits<uint64_t>::max();
    EXPECT_EQ(row_bytes(GgmlType::F32, max / 4), (max / 4) * 4);
    EXPECT_EQ(row_bytes(GgmlType::F32, max / 4 + 1), std::nullopt);
    EXPECT_EQ(row_bytes(GgmlType::F16, max), std::nullopt);
    // Q8_0 blocks have more bytes (34) than elements (32), so a valid element count can overflow.
    const uint64_t q8_blocks = max / 34;  // the largest block count whose bytes fit
    EXPECT_EQ(row_bytes(GgmlType::Q8_0, q8_blocks * 32), q8_blocks * 34);
    EXPECT_EQ(row_bytes(GgmlType::Q8_0, (q8_blocks + 1) * 32), std::nullopt);
    // Q4_K blocks have fewer bytes than elements: even the largest count fits.
    const uint64_t q4k_elems = max / 256 * 256;
    EXPECT_EQ(row_bytes(GgmlType::Q4_K, q4k_elems), max / 256 * 144);
}

TEST(DeviceLayout, Q6_KBlocksAndQuantisedRowsArePaddedTo16ByteMultiples) {
    for (GgmlType t : weight_types()) {
        const TypeTraits& tr = type_traits(t);
        EXPECT_EQ(device_block_bytes(t), t == GgmlType::Q6_K ? 224u : tr.block_bytes) << tr.name;
        EXPECT_EQ(device_row_align(t), tr.block_elems == 1 ? 1u : 16u) << tr.name;
        // 4096 elements: a whole number of 16-byte words in every format, no row padding.
        EXPECT_EQ(device_row_bytes(t, 4096), 4096 / tr.block_elems * uint64_t{device_block_bytes(t)}) << tr.name;
    }
    // SmolLM2's rows of 576: Q4_1 360 -> 368 bytes, Q8_0 612 -> 624; F16 1152 as it is.
    EXPECT_EQ(device_row_bytes(GgmlType::Q4_1, 576), 368u);
    EXPECT_EQ(device_row_bytes(GgmlType::Q8_0, 576), 624u);
    EXPECT_EQ(device_row_bytes(GgmlType::Q4_0, 32), 32u);
    EXPECT_EQ(device_row_bytes(GgmlType::F16, 3), 6u);
    EXPECT_EQ(device_row_bytes(GgmlType::Q6_K, 256 + 32), std::nullopt);
}

TEST(DeviceLayout, RowsKeepEveryBlockByteAndZeroThePadding) {
    // K = 768: Q6_K pads its blocks, Q4_0 (432 bytes) and Q8_0 (816) their rows to 16 bytes.
    for (GgmlType t : {GgmlType::Q6_K, GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_1}) {
        const uint64_t K = 768, N = 3, rb = *row_bytes(t, K), drb = *device_row_bytes(t, K);
        ASSERT_EQ(drb % 16, 0u) << type_traits(t).name;
        std::vector<uint8_t> gguf(rb * N);
        std::mt19937 rng(5);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        std::vector<float> src(K * N);
        for (float& v : src) v = normal(rng);
        for (uint64_t n = 0; n < N; ++n) quantize_row(t, src.data() + n * K, gguf.data() + n * rb, K);
        const std::vector<uint8_t> dev = rows_to_device(t, gguf, K, N);
        ASSERT_EQ(dev.size(), drb * N);
        const uint64_t bb = type_traits(t).block_bytes, dbb = device_block_bytes(t), nb = K / type_traits(t).block_elems;
        for (uint64_t n = 0; n < N; ++n) {
            const uint8_t* row = dev.data() + n * drb;
            for (uint64_t b = 0; b < nb; ++b) {
                EXPECT_EQ(0, std::memcmp(row + b * dbb, gguf.data() + n * rb + b * bb, bb)) << "row " << n << " block " << b;
                for (uint64_t i = bb; i < dbb; ++i) EXPECT_EQ(row[b * dbb + i], 0u) << "block " << b << " byte " << i;
            }
            for (uint64_t i = nb * dbb; i < drb; ++i) EXPECT_EQ(row[i], 0u) << "row " << n << " byte " << i;
        }
    }
}

// --- fp16 / bf16 -----------------------------------------------------------------------------

TEST(Fp16, EveryHalfSurvivesARoundTripThroughFloat) {
    for (uint32_t h = 0; h <= 0xFFFF; ++h) {
        const float f = fp16_to_fp32(static_cast<uint16_t>(h));
        const bool is_nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0;
        if (is_nan) {
            EXPECT_TRUE(std::isnan(f)) << std::hex << h;
            // A NaN comes back as a quiet NaN with the same sign and top payload bits.
            EXPECT_EQ(fp32_to_fp16(f), h | 0x200) << std::hex << h;
        } else {
            ASSERT_EQ(fp32_to_fp16(f), h) << std::hex << "0x" << h << " -> " << f;
        }
    }
}

TEST(Fp16, DecodesInfinitySubnormalsAndExtremes) {
    EXPECT_EQ(fp16_to_fp32(0x7C00), std::numeric_limits<float>::infinity());
    EXPECT_EQ(fp16_to_fp32(0xFC00), -std::numeric_limits<float>::infinity());
    EXPECT_EQ(fp16_to_fp32(0x0001), 0x1p-24f);
    EXPECT_EQ(fp16_to_fp32(0x03FF), 1023 * 0x1p-24f);
    EXPECT_EQ(fp16_to_fp32(0x0400), 0x1p-14f);
    EXPECT_EQ(fp16_to_fp32(0x7BFF), 65504.0f);
    EXPECT_EQ(bits_of(fp16_to_fp32(0x8000)), 0x80000000u);
}

TEST(Fp16, RoundsToNearestEvenAndOverflowsToInfinity) {
    EXPECT_EQ(fp32_to_fp16(1.0f + 0x1p-11f), 0x3C00);        // tie -> even (down)
    EXPECT_EQ(fp32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3C02);    // tie -> even (up)
    EXPECT_EQ(fp32_to_fp16(65519.0f), 0x7BFF);
    EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);
    EXPECT_EQ(fp32_to_fp16(-1e30f), 0xFC00);
    EXPECT_EQ(fp32_to_fp16(0x1p-25f), 0x0000);               // tie -> even (zero)
    EXPECT_EQ(fp32_to_fp16(3 * 0x1p-25f), 0x0002);           // tie -> even (2 * 2^-24)
    EXPECT_EQ(fp32_to_fp16(0x1p-14f - 0x1p-25f), 0x0400);    // rounds up into the normals
    EXPECT_EQ(fp32_to_fp16(1e-30f), 0x0000);
    EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
    EXPECT_EQ(fp32_to_fp16(std::numeric_limits<float>::quiet_NaN()), 0x7E00);
}

TEST(Bf16, EveryBf16SurvivesARoundTripThroughFloat) {
    for (uint32_t h = 0; h <= 0xFFFF; ++h) {
        const float f = bf16_to_fp32(static_cast<uint16_t>(h));
        const bool is_nan = (h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0;
        EXPECT_EQ(fp32_to_bf16(f), is_nan ? (h | 0x40) : h) << std::hex << h;
    }
}

TEST(Bf16, RoundsToNearestEvenLikeGgml) {
    EXPECT_EQ(fp32_to_bf16(float_of(0x3F808000)), 0x3F80);  // tie -> even (down)
    EXPECT_EQ(fp32_to_bf16(float_of(0x3F818000)), 0x3F82);  // tie -> even (up)
    EXPECT_EQ(fp32_to_bf16(float_of(0x3F808001)), 0x3F81);
    EXPECT_EQ(fp32_to_bf16(float_of(0x7F7FFFFF)), 0x7F80);  // max float rounds to inf
    EXPECT_EQ(fp32_to_bf16(float_of(0x7F800001)), 0x7FC0);  // signalling NaN forced quiet
    EXPECT_EQ(fp32_to_bf16(float_of(0x00000001)), 0x0000);  // subnormals round like normals
}

// --- against gguf-py -------------------------------------------------------------------------

class GgufVectors : public testing::TestWithParam<GgmlType> {};

// Exact: every dequantised value is one correctly rounded fp32 operation on exact products
// (see quant.cpp), so there is no room for a last-bit difference.
TEST_P(GgufVectors, DequantizeMatchesGgufPythonBitForBit) {
    const GgmlType t = GetParam();
    QuantVector v;
    if (!load_vector(t, v)) return;
    std::vector<float> out(v.n_elems);
    dequantize_row(t, v.raw.data(), out.data(), v.n_elems);
    const int64_t i = first_bit_difference(out, v.dequantised);
    EXPECT_EQ(i, -1) << type_traits(t).name << ": element " << i << " is " << out[i]
                     << " (0x" << std::hex << bits_of(out[i]) << "), gguf says "
                     << v.dequantised[i] << " (0x" << bits_of(v.dequantised[i]) << ")";
}

// Where gguf quantises, our reference rounding is ggml's, so the bytes must be identical.
TEST_P(GgufVectors, QuantizeMatchesGgufPythonByteForByte) {
    const GgmlType t = GetParam();
    QuantVector v;
    if (!load_vector(t, v)) return;
    if (!v.has_input) {
        // gguf 0.19 cannot quantise K-quants; their round trip is covered by NMSE below.
        EXPECT_TRUE(type_traits(t).block_elems == 256) << "only K-quants lack gguf input";
        return;
    }
    std::vector<uint8_t> out(v.raw.size(), 0xAA);
    quantize_row(t, v.input.data(), out.data(), v.n_elems);
    for (size_t b = 0; b < out.size(); ++b) {
        ASSERT_EQ(out[b], v.raw[b]) << type_traits(t).name << ": first differing byte " << b
                                    << " (block " << b / type_traits(t).block_bytes
                                    << ", byte " << b % type_traits(t).block_bytes << ")";
    }
}

INSTANTIATE_TEST_SUITE_P(WeightTypes, GgufVectors, testing::ValuesIn(weight_types()), type_name);

// --- quantise -> dequantise quality ----------------------------------------------------------

struct NmseBound {
    GgmlType type;
    double max_nmse;  // on N(0, 1) data; measured values are noted beside each bound
};

class RoundTrip : public testing::TestWithParam<NmseBound> {};

std::string bound_name(const testing::TestParamInfo<NmseBound>& info) {
    return type_traits(info.param.type).name;
}

TEST_P(RoundTrip, GaussianDataStaysWithinTheStatedNmseForSeveralSeeds) {
    const NmseBound bound = GetParam();
    const int64_t n = 4096;
    for (uint32_t seed : {1u, 2u, 3u, 4u, 5u}) {
        std::mt19937 rng(seed);
        std::normal_distribution<float> gauss(0.0f, 1.0f);
        std::vector<float> x(n);
        for (float& xi : x) xi = gauss(rng);
        std::vector<uint8_t> q(*row_bytes(bound.type, n));
        std::vector<float> y(n);
        quantize_row(bound.type, x.data(), q.data(), n);
        dequantize_row(bound.type, q.data(), y.data(), n);
        const double e = nmse(x, y);
        EXPECT_LT(e, bound.max_nmse) << type_traits(bound.type).name << " seed " << seed;
        if (seed == 1) {
            RecordProperty("nmse", std::to_string(e));
            std::printf("    %s NMSE on N(0,1): %.3g\n", type_traits(bound.type).name, e);
        }
    }
}

// Bounds are ~1.3x the worst of the five seeds (n = 4096), measured with g++ 12 -O2; the
// K-quant quantisers are the simple ones in quant.cpp, not ggml's iterative search.
INSTANTIATE_TEST_SUITE_P(AllTypes, RoundTrip,
                         testing::Values(NmseBound{GgmlType::F32, 1e-30},   // 0
                                         NmseBound{GgmlType::F16, 6e-8},    // 4.4e-8
                                         NmseBound{GgmlType::BF16, 4e-6},   // 2.9e-6
                                         NmseBound{GgmlType::Q8_0, 4e-5},   // 2.9e-5
                                         NmseBound{GgmlType::Q4_0, 0.010},  // 0.0077
                                         NmseBound{GgmlType::Q4_1, 0.008},  // 0.0063
                                         NmseBound{GgmlType::Q5_0, 0.0025}, // 0.0019
                                         NmseBound{GgmlType::Q5_1, 0.002},  // 0.0015
                                         NmseBound{GgmlType::Q2_K, 0.14},   // 0.113
                                         NmseBound{GgmlType::Q3_K, 0.032},  // 0.0246
                                         NmseBound{GgmlType::Q4_K, 0.008},  // 0.0064
                                         NmseBound{GgmlType::Q5_K, 0.002},  // 0.0015
                                         NmseBound{GgmlType::Q6_K, 0.0005}),// 0.00037
                         bound_name);

// --- K-quant quantiser validity ----------------------------------------------------------------

TEST(Quantize, ZeroInputGivesZeroOutputInEveryFormat) {
    const int64_t n = 512;
    const std::vector<float> zeros(n, 0.0f);
    for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                       GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K,
                       GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
        std::vector<uint8_t> q(*row_bytes(t, n));
        std::vector<float> y(n, 1.0f);
        quantize_row(t, zeros.data(), q.data(), n);
        dequantize_row(t, q.data(), y.data(), n);
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], 0.0f) << type_traits(t).name << " " << i;
    }
}

TEST(Quantize, KQuantsPreserveSubBlocksWithVeryDifferentScales) {
    // Sub-blocks spanning 4 orders of magnitude: the large ones must still be accurate.
    const int64_t n = 256;
    std::vector<float> x(n);
    for (int64_t i = 0; i < n; ++i) x[i] = std::cos(0.1f * static_cast<float>(i)) *
               std::pow(10.0f, static_cast<float>(i / 64 - 2));
    for (GgmlType t : {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K,
                       GgmlType::Q6_K}) {
        std::vector<uint8_t> q(*row_bytes(t, n));
        std::vector<float> y(n);
        quantize_row(t, x.data(), q.data(), n);
        dequantize_row(t, q.data(), y.data(), n);
        EXPECT_LT(nmse(x, y), 0.2) << type_traits(t).name;
    }
}

} // namespace
} // namespace chorus
