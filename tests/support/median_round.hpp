#pragma once

#include <algorithm>
#include <utility>
#include <vector>

namespace troupe::test {

/// Of benchmark rounds measured as (ours, baseline) pairs, the round whose
/// ratio ours/baseline is the median: one hiccup of a shared machine moves
/// one round, not the figure. `rounds` must not be empty.
inline std::pair<double, double> median_round(std::vector<std::pair<double, double>> rounds) {
  std::sort(rounds.begin(), rounds.end(),
            [](const auto& a, const auto& b) { return a.first / a.second < b.first / b.second; });
  return rounds[rounds.size() / 2];
}

} // namespace troupe::test
