// Math for the CPU launchers' lane loops: loops over a few pixels at once (`#pragma omp simd`) that the
// compiler turns into SIMD code. libm's exp is a call that such a loop cannot contain (without
// -ffast-math), so lane_exp is exp written in arithmetic and bit operations only: a Cody-Waite range
// reduction x = n ln2 + r, |r| <= ln2 / 2, a polynomial for exp(r) and 2^n from the exponent bits. It
// is within 2 ulp of the correctly rounded exp for float (Cephes' expf polynomial) and double (Taylor
// to degree 13). lane_log likewise: the exponent from the bits, a polynomial for the log of the
// mantissa in [sqrt(1/2), sqrt(2)) (Cephes' logf; fdlibm's log for double).
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

// log(x) for normal x > 0 (running totals of blending weights); meaningless for x <= 0, subnormals,
// inf and NaN (callers mask those lanes).
template <typename T>
SG_HD T lane_log(T x);

template <>
SG_HD float lane_log<float>(float x) {
    const int32_t bits = lane_bits<int32_t>(x);
    const int32_t e = ((bits >> 23) & 0xff) - 126;
    const float m = lane_bits<float>((bits & 0x007fffff) | 0x3f000000);  // x = m 2^e, m in [0.5, 1)
    const bool low = m < 0.707106781186547524f;
    const float f = low ? m + m - 1.0f : m - 1.0f;  // log(x) = log(1 + f) + k ln2
    const float k = (float)(low ? e - 1 : e);
    const float z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    y += k * -2.12194440e-4f;  // ln2 split in two, as in lane_exp
    y -= 0.5f * z;
    return (f + y) + k * 0.693359375f;
}

template <>
SG_HD double lane_log<double>(double x) {
    const int64_t bits = lane_bits<int64_t>(x);
    const int64_t e = ((bits >> 52) & 0x7ff) - 1022;
    const double m = lane_bits<double>((bits & 0x000fffffffffffffLL) | 0x3fe0000000000000LL);  // [0.5, 1)
    const bool low = m < 0.7071067811865476;
    const double f = low ? m + m - 1.0 : m - 1.0;
    const double k = (double)(low ? e - 1 : e);
    // fdlibm: log(1 + f) = f - f^2 / 2 + s (f^2 / 2 + R(s^2)), s = f / (2 + f)
    const double s = f / (2.0 + f), z = s * s, hfsq = 0.5 * f * f;
    double r = 1.479819860511658591e-01;
    r = r * z + 1.531383769920937332e-01;
    r = r * z + 1.818357216161805012e-01;
    r = r * z + 2.222219843214978396e-01;
    r = r * z + 2.857142874366239149e-01;
    r = r * z + 3.999999999940941908e-01;
    r = r * z + 6.666666666666735130e-01;
    r *= z;
    return k * 6.93147180369123816490e-01 - ((hfsq - (s * (hfsq + r) + k * 1.90821492927058770002e-10)) - f);
}

}  // namespace scenegrad
