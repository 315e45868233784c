// Math for the CPU launchers' lane loops: loops over a few pixels at once (`#pragma omp simd`) that the
// compiler turns into SIMD code. libm's exp is a call that such a loop cannot contain (without
// -ffast-math), so lane_exp is exp written in arithmetic and bit operations only: a Cody-Waite range
// reduction x = n ln2 + r, |r| <= ln2 / 2, a polynomial for exp(r) and 2^n from the exponent bits. It
// is within 2 ulp of the correctly rounded exp for float (Cephes' expf polynomial) and double (Taylor
// to degree 13).
#pragma once
#include <cstdint>
#include <cstring>

#include "common/hd.h"

namespace scenegrad {

template <typename To, typename From>
SG_HD To lane_bits(From x) {
    static_assert(sizeof(To) == sizeof(From), "lane_bits: sizes differ");
    To y;
    std::memcpy(&y, &x, sizeof(To));
    return y;
}

// exp(x) for x <= 0 (blending weights, Gaussian falloffs); 0 below the smallest normal result. For
// x > 0 the result is meaningless (callers mask those lanes).
template <typename T>
SG_HD T lane_exp(T x);

template <>
SG_HD float lane_exp<float>(float x) {
    const float lo = -87.33654f;  // log of the smallest normal float
    const float xc = x > lo ? x : lo;
    // n = round(x / ln2): the magic constant 1.5 2^23 leaves n in the low bits of the sum's mantissa
    const float magic = 12582912.0f;
    const float m = xc * 1.44269504088896341f + magic;
    const float n = m - magic;
    const int32_t ni = lane_bits<int32_t>(m) - lane_bits<int32_t>(magic);
    const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;  // ln2 split in two (Cody-Waite)
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const float scale = lane_bits<float>((ni + 127) << 23);  // 2^n, n >= -126
    return x > lo ? p * scale : 0.0f;
}

template <>
SG_HD double lane_exp<double>(double x) {
    const double lo = -708.3964185322641;  // log of the smallest normal double
    const double xc = x > lo ? x : lo;
    const double magic = 6755399441055744.0;  // 1.5 2^52
    const double m = xc * 1.4426950408889634 + magic;
    const double n = m - magic;
    const int64_t ni = lane_bits<int64_t>(m) - lane_bits<int64_t>(magic);
    const double r = (xc - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;  // fdlibm's ln2 split
    double p = 1.0 / 6227020800.0;                                                          // 1 / 13!
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    const double scale = lane_bits<double>((ni + 1023) << 52);  // 2^n, n >= -1022
    return x > lo ? p * scale : 0.0;
}

}  // namespace scenegrad
