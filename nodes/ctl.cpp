#include "nodes/ctl.hpp"

#include "nodes/http_call.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <stdlib.h>

namespace troupe::gateway {

namespace {

using nlohmann::json;

const char* ctl_usage =
    "usage: troupe ctl [--gateway URL] [--key KEY] [--cacert FILE] [--json] COMMAND\n"
    "  nodes         members with roles, load and liveness\n"
    "  workers       every inference worker in the cluster with its load\n"
    "  agents        stored agents\n"
    "  drain NODE    NODE finishes its streams, hands its agents on, leaves, exits\n"
    "URL defaults to $TROUPE_GATEWAY or http://127.0.0.1:7800; KEY to $TROUPE_API_KEY.\n"
    "An https:// URL's certificate is checked against the system's CAs and FILE\n"
    "(default $TROUPE_CA_FILE): a private CA or the gateway's self-signed certificate.\n";

struct reply {
  int status = 0;
  json body;
};

reply call(const std::string& url, const std::string& key, const std::string& method,
           const std::string& target) {
  auto r = http_call(url, key, method, target, "troupe-ctl");
  return {r.status, json::parse(r.body, nullptr, false)};
}

std::string text(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

void print_nodes(const json& cluster) {
  std::printf("%-16s %-9s %-26s %-8s %-7s %-8s %s\n", "NODE", "STATE", "ROLES", "AGENTS", "WORKERS",
              "BUSY", "ENDPOINT");
  for (auto& n : cluster.value("nodes", json::array())) {
    std::string roles;
    for (auto& r : n.value("roles", json::array())) {
      if (!roles.empty()) roles += ',';
      roles += r.get<std::string>();
    }
    int64_t busy = 0, slots = 0;
    for (auto& w : n.value("workers", json::array())) {
      busy += w.value("active", int64_t{0}) + w.value("queued", int64_t{0});
      slots += w.value("slots", int64_t{0});
    }
    auto state = !n.value("live", true) ? "dead" : n.value("draining", false) ? "draining" : "live";
    std::printf("%-16s %-9s %-26s %-8lld %-7zu %-8s %s%s\n", text(n, "id").c_str(), state,
                roles.c_str(), static_cast<long long>(n.value("agents", int64_t{0})),
                n.value("workers", json::array()).size(),
                (std::to_string(busy) + "/" + std::to_string(slots)).c_str(),
                text(n, "endpoint").c_str(), n.value("self", false) ? "  (this gateway)" : "");
  }
}

void print_workers(const json& cluster) {
  std::printf("%-24s %-5s %-8s %-8s %-8s %-8s %s\n", "WORKER", "KIND", "ACTIVE", "QUEUED", "SLOTS",
              "SERVED", "HEALTH");
  for (auto& n : cluster.value("nodes", json::array()))
    for (auto& w : n.value("workers", json::array()))
      std::printf("%-24s %-5s %-8lld %-8lld %-8lld %-8llu %s\n",
                  (text(n, "id") + "/" + text(w, "id")).c_str(), text(w, "kind").c_str(),
                  static_cast<long long>(w.value("active", int64_t{0})),
                  static_cast<long long>(w.value("queued", int64_t{0})),
                  static_cast<long long>(w.value("slots", int64_t{0})),
                  static_cast<unsigned long long>(w.value("served", uint64_t{0})),
                  w.value("healthy", true) ? "ok" : text(w, "health").c_str());
}

} // namespace

int run_ctl(const std::vector<std::string>& args) {
  const char* env_url = std::getenv("TROUPE_GATEWAY");
  const char* env_key = std::getenv("TROUPE_API_KEY");
  std::string url = env_url ? env_url : "http://127.0.0.1:7800";
  std::string key = env_key ? env_key : "";
  bool raw = false;
  std::vector<std::string> words;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--gateway" && i + 1 < args.size())
      url = args[++i];
    else if (args[i] == "--key" && i + 1 < args.size())
      key = args[++i];
    else if (args[i] == "--cacert" && i + 1 < args.size())
      ::setenv("TROUPE_CA_FILE", args[++i].c_str(), 1); // what http_call reads
    else if (args[i] == "--json")
      raw = true;
    else if (args[i].rfind("--", 0) == 0) {
      std::fprintf(stderr, "troupe ctl: unknown option '%s'\n%s", args[i].c_str(), ctl_usage);
      return 2;
    } else
      words.push_back(args[i]);
  }
  bool drain = words.size() == 2 && words[0] == "drain";
  if (!drain && (words.size() != 1 ||
                 (words[0] != "nodes" && words[0] != "workers" && words[0] != "agents"))) {
    std::fputs(ctl_usage, stderr);
    return 2;
  }
  reply r;
  try {
    if (drain)
      r = call(url, key, "POST", "/api/cluster/nodes/" + words[1] + "/drain");
    else
      r = call(url, key, "GET", words[0] == "agents" ? "/api/agents" : "/api/cluster");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "troupe ctl: cannot reach the gateway at %s: %s\n", url.c_str(), e.what());
    return 2;
  }
  if (r.status >= 300) {
    auto err = r.body.is_object() && r.body.contains("error") ? r.body["error"] : r.body;
    std::fprintf(stderr, "troupe ctl: %d %s\n", r.status,
                 err.is_object() ? text(err, "message").c_str() : err.dump().c_str());
    return 1;
  }
  if (raw) {
    std::printf("%s\n", r.body.dump(2).c_str());
  } else if (drain) {
    std::printf("%s is draining: it finishes its streams, hands its agents on and leaves\n",
                words[1].c_str());
  } else if (words[0] == "nodes") {
    print_nodes(r.body);
  } else if (words[0] == "workers") {
    print_workers(r.body);
  } else {
    for (auto& a : r.body.value("agents", json::array()))
      std::printf("%s\n", a.get<std::string>().c_str());
  }
  return 0;
}

} // namespace troupe::gateway
