// The config loader from YAML text (`load_config_text`, which
// `load_config_file` calls with the file's contents).
#include "runtime/config.hpp"
#include "runtime/mcp_tools.hpp"
#include "tests/fuzz/fuzz_check.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

using namespace troupe::runtime;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text{reinterpret_cast<const char*>(data), size};
  auto loaded = load_config_text(text, "fuzz.yaml");
  if (auto* err = std::get_if<config_error>(&loaded)) {
    // Every error names the file it came from.
    FUZZ_CHECK(err->what.rfind("fuzz.yaml", 0) == 0);
    return 0;
  }
  // What the node relies on in a config that loaded.
  auto& cfg = std::get<node_config>(loaded);
  FUZZ_CHECK(!cfg.id.empty());
  FUZZ_CHECK(!cfg.agent_types.empty());
  FUZZ_CHECK(!cfg.has_role("inference") || !cfg.accelerators.empty());
  for (auto& acc : cfg.accelerators) {
    FUZZ_CHECK(acc.slots >= 1);
    FUZZ_CHECK(acc.backend.url.empty() || acc.backend.url.rfind("http://", 0) == 0);
  }
  if (cfg.cluster.enabled) {
    FUZZ_CHECK(!cfg.cluster.bind.empty() && !cfg.cluster.advertise.empty());
    FUZZ_CHECK(cfg.cluster.suspect_after >= 2 * cfg.cluster.heartbeat);
  }
  for (auto& m : cfg.mcp_servers)
    FUZZ_CHECK(m.command.empty() != m.url.empty());
  for (auto& [name, type] : cfg.agent_types) {
    FUZZ_CHECK(!name.empty() && name.find('/') == std::string::npos);
    for (auto& tool : type.tools)
      if (tool.rfind("mcp:", 0) == 0) FUZZ_CHECK(mcp_selector::parse(tool).has_value());
  }
  return 0;
}
