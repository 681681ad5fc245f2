#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace troupe::runtime {

/// A monotonically increasing count. Lock-free; any thread.
class counter {
public:
  void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

private:
  std::atomic<uint64_t> value_{0};
};

/// A value that goes up and down. Lock-free; any thread.
class gauge {
public:
  void set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  void add(int64_t d) { value_.fetch_add(d, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

private:
  std::atomic<int64_t> value_{0};
};

/// Fixed-bucket histogram of seconds (Prometheus `le` buckets). Lock-free.
class histogram {
public:
  explicit histogram(std::vector<double> bounds);
  void observe(double seconds);
  std::string render(const std::string& name, const std::string& labels) const;
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_us_{0};
};

/// The process's metrics, rendered as Prometheus text by `GET /metrics`.
/// Metrics are created on first use and live as long as the registry, so
/// callers may keep the returned references.
class metrics_registry {
public:
  static metrics_registry& global();

  /// `labels` is the rendered label set without braces, e.g. `code="overloaded"`.
  counter& get_counter(const std::string& name, const std::string& help,
                       const std::string& labels = "");
  gauge& get_gauge(const std::string& name, const std::string& help,
                   const std::string& labels = "");
  histogram& get_histogram(const std::string& name, const std::string& help,
                           const std::string& labels = "");

  std::string render() const;

  /// Sets the process gauges (`process_resident_memory_bytes`,
  /// `process_open_fds`) from /proc; `GET /metrics` calls it before rendering.
  void sample_process();

private:
  struct family {
    std::string help;
    std::string type;
    std::map<std::string, std::unique_ptr<counter>> counters;
    std::map<std::string, std::unique_ptr<gauge>> gauges;
    std::map<std::string, std::unique_ptr<histogram>> histograms;
  };

  family& fam(const std::string& name, const std::string& help, const char* type);

  mutable std::mutex mutex_;
  std::map<std::string, family> families_;
};

/// This process's resident memory in bytes (/proc/self/statm); 0 if unknown.
int64_t resident_memory_bytes();

} // namespace troupe::runtime
