// Writes seed frames for fuzz_cluster_envelope with the real encoders:
// envelopes of each message family and the payloads that follow them.
//   fuzz_cluster_seeds DIR
#include "cluster/wire.hpp"

#include <fstream>
#include <iostream>
#include <string>

using namespace troupe;
using namespace troupe::cluster;
using nlohmann::json;

namespace {

void write(const std::string& dir, const std::string& name, const std::string& bytes) {
  std::ofstream{dir + "/" + name, std::ios::binary} << bytes;
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: fuzz_cluster_seeds DIR\n";
    return 2;
  }
  std::string dir = argv[1];
  auto env = [](msg_type t, std::string target, uint64_t corr) {
    return encode_envelope({protocol_version, t, "gpu-1", 1717171717123, std::move(target), corr});
  };
  write(dir, "env_ping", env(msg_type::ping, "", 0));
  write(dir, "env_infer", env(msg_type::infer, "gpu0", 42));
  write(dir, "env_agent_send", env(msg_type::agent_send, "chat/k1", 0));
  write(dir, "env_mcp_call", env(msg_type::mcp_call, "files", 70000));
  write(dir, "env_long_target", env(msg_type::agent_event, std::string(300, 'a'), 1ull << 40));

  runtime::chat_request req;
  req.model = "qwen2.5-7b-instruct";
  req.messages = {{"system", "You are a helpful assistant.", {}, {}, {}},
                  {"user", "What is 2+2?", {}, {}, {}},
                  {"assistant", "", {{"call_1", "calculator", R"({"expr":"2+2"})"}}, {}, {}},
                  {"tool", "4", {}, "call_1", "calculator"}};
  req.tools = {{"calculator", "Evaluates arithmetic.", R"({"type":"object"})"}};
  req.affinity_key = "chat/k1";
  req.prefer = {"npu", "gpu", "cpu"};
  write(dir, "pay_infer", encode_payload({{"request", to_json(req)}, {"job", 7}}));
  // Whole frames as they travel: envelope, then payload.
  write(dir, "frame_infer",
        env(msg_type::infer, "gpu0", 42) + encode_payload({{"request", to_json(req)}, {"job", 7}}));

  runtime::chat_result res;
  res.content = "4";
  res.tool_calls = {{"call_2", "clock", "{}"}};
  res.tokens = {52, 12};
  res.finish_reason = "stop";
  write(dir, "pay_done", encode_payload({{"result", to_json(res)}}));
  write(dir, "pay_fail",
        encode_payload({{"failure", to_json(runtime::failure{runtime::errc::timeout, "slow"})},
                        {"started", true},
                        {"worker", "gpu0"}}));
  write(dir, "pay_token", encode_payload({{"text", "Hel"}}));

  runtime::agent_event ev;
  ev.kind = runtime::event_kind::token;
  ev.agent = "chat/k1";
  ev.id = "2";
  ev.text = "Hel";
  write(dir, "pay_agent_event", encode_payload(to_json(*runtime::seal(ev))));
  write(dir, "pay_agent_answer",
        encode_payload(
            {{"answer", "4"}, {"prompt_tokens", 52}, {"completion_tokens", 12}, {"steps", 2}}));
  write(dir, "pay_mcp_tools",
        encode_payload({{"version", 3},
                        {"timeout_ms", 60000},
                        {"tools", json::array({{{"name", "read"},
                                                {"exposed", "files__read"},
                                                {"description", "Reads a file."},
                                                {"schema", R"({"type":"object"})"}}})}}));
  write(dir, "pay_mcp_call",
        encode_payload({{"tool", "read"}, {"arguments", R"({"path":"a"})"}, {"key", "k"}}));
  write(dir, "pay_empty", encode_payload(json::object()));
  return 0;
}
