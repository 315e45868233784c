"""``common/lanes_cpu.h``: lane_exp and lane_log against libm, in ulps of the correctly rounded result.

The lane loops of the CPU kernels (spheres, Gaussians) use these instead of libm so that the loops
vectorise; the kernel tests only see them through rendered images. Here a small program built with
the same flags as the extension evaluates both on a few million arguments and reports the largest
error (skipped without a C++ compiler).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scenegrad.cuda import build

cxx = build.find_compiler()
pytestmark = pytest.mark.skipif(cxx is None, reason="no C++ compiler: the lane math cannot be built")

PROGRAM = r"""
#include <cmath>
#include <cstdio>
#include <random>
#include "common/lanes_cpu.h"
using namespace scenegrad;

// |got - exact| in ulps of the exact value rounded to T (exact: long double).
template <typename T>
double ulps(T got, long double exact) {
    const T r = (T)exact;
    const T next = std::nextafter(r, exact > (long double)r ? (T)INFINITY : (T)-INFINITY);
    const long double ulp = std::fabs((long double)next - (long double)r);
    return (double)(std::fabs((long double)got - exact) / (ulp > 0 ? ulp : 1));
}

int main() {
    std::mt19937_64 g(7);
    double exp_f = 0, exp_d = 0, log_f = 0, log_d = 0;
    std::uniform_real_distribution<double> e(-87.0, 0.0), l(-80.0, 80.0);
    for (int i = 0; i < 2000000; ++i) {
        const double x = e(g);
        const float xf = (float)x;
        exp_f = std::fmax(exp_f, ulps<float>(lane_exp(xf), std::exp((long double)xf)));
        exp_d = std::fmax(exp_d, ulps<double>(lane_exp(x), std::exp((long double)x)));
        const double y = std::exp(l(g));  // log arguments from 1e-35 to 1e35
        const float yf = (float)y;
        log_f = std::fmax(log_f, ulps<float>(lane_log(yf), std::log((long double)yf)));
        log_d = std::fmax(log_d, ulps<double>(lane_log(y), std::log((long double)y)));
    }
    // exact cases: log of powers of two and of 1, exp of 0
    const bool exact = lane_log(1.0f) == 0.0f && lane_log(1.0) == 0.0 && lane_exp(0.0f) == 1.0f &&
                       lane_exp(0.0) == 1.0 && std::fabs(lane_log(0.5f) + 0.69314718f) < 1e-7f;
    std::printf("%g %g %g %g %d\n", exp_f, exp_d, log_f, log_d, exact ? 1 : 0);
    return 0;
}
"""


def test_lane_exp_and_lane_log_are_within_two_ulps_of_libm(tmp_path: Path):
    source = tmp_path / "lanes.cpp"
    source.write_text(PROGRAM)
    binary = tmp_path / "lanes"
    flags = ["-O2", "-std=c++20", "-fno-math-errno", "-fno-trapping-math", f"-I{build.SOURCE_DIR}"]
    subprocess.run([cxx, *flags, str(source), "-o", str(binary)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout.split()
    exp_f, exp_d, log_f, log_d = (float(v) for v in out[:4])
    assert exp_f <= 2.0 and exp_d <= 2.0, f"lane_exp errors: float {exp_f} ulp, double {exp_d} ulp"
    assert log_f <= 1.0 and log_d <= 1.0, f"lane_log errors: float {log_f} ulp, double {log_d} ulp"
    assert out[4] == "1", "lane_log(1), lane_exp(0) or lane_log(0.5) is not exact"
