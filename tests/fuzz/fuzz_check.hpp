#pragma once

#include <cstdio>
#include <cstdlib>

/// A property the fuzzed code must keep. A violation aborts, which
/// libFuzzer reports as a crash and saves the input.
#define FUZZ_CHECK(cond)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond);           \
      std::abort();                                                                                \
    }                                                                                              \
  } while (false)
