#include "runtime/metrics.hpp"

#include <cstdio>
#include <dirent.h>
#include <unistd.h>

namespace troupe::runtime {

histogram::histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size()]) {
  for (size_t i = 0; i < bounds_.size(); ++i)
    buckets_[i] = 0;
}

void histogram::observe(double seconds) {
  for (size_t i = 0; i < bounds_.size(); ++i)
    if (seconds <= bounds_[i]) buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

namespace {

std::string with_le(const std::string& labels, const std::string& le) {
  return "{" + labels + (labels.empty() ? "" : ",") + "le=\"" + le + "\"}";
}

std::string braces(const std::string& labels) {
  return labels.empty() ? std::string{} : "{" + labels + "}";
}

} // namespace

std::string histogram::render(const std::string& name, const std::string& labels) const {
  std::string out;
  char num[64];
  for (size_t i = 0; i < bounds_.size(); ++i) {
    std::snprintf(num, sizeof num, "%g", bounds_[i]);
    out += name + "_bucket" + with_le(labels, num) + " " +
           std::to_string(buckets_[i].load(std::memory_order_relaxed)) + "\n";
  }
  out += name + "_bucket" + with_le(labels, "+Inf") + " " + std::to_string(count()) + "\n";
  std::snprintf(num, sizeof num, "%.6f", sum_us_.load(std::memory_order_relaxed) / 1e6);
  out += name + "_sum" + braces(labels) + " " + num + "\n";
  out += name + "_count" + braces(labels) + " " + std::to_string(count()) + "\n";
  return out;
}

metrics_registry& metrics_registry::global() {
  static metrics_registry instance;
  return instance;
}

metrics_registry::family& metrics_registry::fam(const std::string& name, const std::string& help,
                                                const char* type) {
  auto& f = families_[name];
  if (f.type.empty()) {
    f.help = help;
    f.type = type;
  }
  return f;
}

counter& metrics_registry::get_counter(const std::string& name, const std::string& help,
                                       const std::string& labels) {
  std::lock_guard<std::mutex> guard{mutex_};
  auto& slot = fam(name, help, "counter").counters[labels];
  if (!slot) slot = std::make_unique<counter>();
  return *slot;
}

gauge& metrics_registry::get_gauge(const std::string& name, const std::string& help,
                                   const std::string& labels) {
  std::lock_guard<std::mutex> guard{mutex_};
  auto& slot = fam(name, help, "gauge").gauges[labels];
  if (!slot) slot = std::make_unique<gauge>();
  return *slot;
}

histogram& metrics_registry::get_histogram(const std::string& name, const std::string& help,
                                           const std::string& labels) {
  std::lock_guard<std::mutex> guard{mutex_};
  auto& slot = fam(name, help, "histogram").histograms[labels];
  if (!slot)
    slot = std::make_unique<histogram>(std::vector<double>{
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
  return *slot;
}

std::string metrics_registry::render() const {
  std::lock_guard<std::mutex> guard{mutex_};
  std::string out;
  for (auto& [name, f] : families_) {
    out += "# HELP " + name + " " + f.help + "\n";
    out += "# TYPE " + name + " " + f.type + "\n";
    for (auto& [labels, c] : f.counters)
      out += name + braces(labels) + " " + std::to_string(c->value()) + "\n";
    for (auto& [labels, g] : f.gauges)
      out += name + braces(labels) + " " + std::to_string(g->value()) + "\n";
    for (auto& [labels, h] : f.histograms)
      out += h->render(name, labels);
  }
  return out;
}

int64_t resident_memory_bytes() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<int64_t>(resident) * sysconf(_SC_PAGESIZE);
}

void metrics_registry::sample_process() {
  get_gauge("process_resident_memory_bytes", "Resident memory of this process")
      .set(resident_memory_bytes());
  int64_t fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d))
      ++fds;
    closedir(d);
    fds -= 3; // ".", ".." and the directory's own descriptor
  }
  get_gauge("process_open_fds", "Open file descriptors of this process").set(fds);
}

} // namespace troupe::runtime
