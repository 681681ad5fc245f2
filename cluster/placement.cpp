#include "cluster/placement.hpp"
#include "runtime/log.hpp"
#include "runtime/redis_client.hpp"

#include <hiredis/hiredis.h>

#include <cmath>

namespace troupe::cluster {

using runtime::errc;
using runtime::redis_client;

namespace {

/// FNV-1a then a 64-bit finaliser: the same on every machine and build
/// (std::hash is not), so every node agrees on the winner.
uint64_t stable_hash(const std::string& a, const std::string& b) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](const std::string& s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  mix(a);
  h ^= 0xff;
  h *= 1099511628211ull;
  mix(b);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

// Sets the claim only if it still holds what the caller read ("" = none).
constexpr const char* claim_script = "local v = redis.call('GET', KEYS[1]) "
                                     "if (not v and ARGV[1] == '') or v == ARGV[1] then "
                                     "  redis.call('SET', KEYS[1], ARGV[2]) return 1 end "
                                     "return 0";

// Deletes the claim only if it is ours.
constexpr const char* release_script =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
    "return 0";

} // namespace

std::string rendezvous(const std::string& agent,
                       const std::vector<std::pair<std::string, double>>& candidates) {
  std::string best;
  double best_score = -INFINITY;
  for (auto& [node, weight] : candidates) {
    // Weighted rendezvous: score = -w / ln(u), u uniform in (0, 1).
    double u = (static_cast<double>(stable_hash(node, agent) >> 11) + 0.5) / 9007199254740992.0;
    double score = -weight / std::log(u);
    if (score > best_score || (score == best_score && node < best)) {
      best_score = score;
      best = node;
    }
  }
  return best;
}

placement::placement(
    std::string redis_url, std::string self_node, uint64_t incarnation, bool self_hosts_agents,
    std::function<bool()> draining, std::function<std::shared_ptr<const cluster_view>()> view,
    std::function<bool(const std::string&, uint64_t)> is_live,
    std::function<caf::actor(const std::string&, uint64_t, const std::string&)> make_proxy)
    : self_node_(std::move(self_node)), self_claim_(self_node_ + ":" + std::to_string(incarnation)),
      hosts_agents_(self_hosts_agents), draining_(std::move(draining)), view_(std::move(view)),
      is_live_(std::move(is_live)), make_proxy_(std::move(make_proxy)),
      redis_(std::make_unique<redis_client>(std::move(redis_url), 2000)) {}

placement::~placement() = default;

placement::decision placement::place(caf::actor_system&, const runtime::agent_id& id,
                                     bool here_only) {
  auto key = "troupe:claim:" + id.str();
  auto view = view_();
  auto live_holder = [&](const std::string& claim) -> const member* {
    auto colon = claim.rfind(':');
    if (colon == std::string::npos) return nullptr;
    auto node = claim.substr(0, colon);
    auto inc = std::strtoull(claim.c_str() + colon + 1, nullptr, 10);
    if (node == self_node_ && draining_()) return nullptr; // its agents move on
    auto* m = view->find(node);
    if (!m || m->incarnation != inc || !is_live_(node, inc)) return nullptr;
    return m;
  };
  try {
    std::lock_guard<std::mutex> guard{mutex_};
    for (int attempt = 0; attempt < 3; ++attempt) {
      auto claim = redis_client::str(redis_->run({"GET", key}).get());
      bool draining = draining_();
      if (claim == self_claim_ && !draining) return here{};
      auto* holder = live_holder(claim);
      // The fence is the cluster's word: a holder any node declared dead is
      // gone even if this node has not noticed yet.
      if (holder && redis_->run({"EXISTS", "troupe:fenced:" + claim})->integer == 1)
        holder = nullptr;
      if (holder) {
        if (here_only)
          return runtime::failure{errc::unknown_agent,
                                  "agent " + id.str() + " is active on node " + holder->id};
        return remote{make_proxy_(holder->id, holder->incarnation, id.str()), holder->id};
      }
      std::string target = self_node_;
      if (!here_only) {
        std::vector<std::pair<std::string, double>> nodes;
        for (auto& m : view->members)
          if (m.has_role("agents") && !m.draining &&
              (m.id == self_node_ ? hosts_agents_ && !draining : is_live_(m.id, m.incarnation)))
            nodes.push_back({m.id, m.weight});
        target = rendezvous(id.str(), nodes);
        if (target.empty())
          return runtime::failure{errc::backend_unavailable, "no live node hosts agents"};
      }
      if (target != self_node_)
        return remote{make_proxy_(target, view->find(target)->incarnation, id.str()), target};
      if (!hosts_agents_ || draining)
        return runtime::failure{errc::unknown_agent,
                                "node " + self_node_ +
                                    (draining ? " is draining" : " hosts no agents")};
      auto won = redis_->run({"EVAL", claim_script, "1", key, claim, self_claim_});
      if (won->type == REDIS_REPLY_INTEGER && won->integer == 1) {
        if (!claim.empty())
          runtime::log::info("cluster", "claim_taken_over",
                             {{"agent", id.str()}, {"from", claim}, {"to", self_claim_}});
        return here{};
      }
      // Someone claimed it meanwhile: read again and follow them.
    }
    return runtime::failure{errc::internal, "agent " + id.str() + " keeps changing owner"};
  } catch (const runtime::redis_error& e) {
    return runtime::failure{errc::internal, std::string{"cluster store unavailable: "} + e.what()};
  }
}

void placement::released(const runtime::agent_id& id) {
  try {
    std::lock_guard<std::mutex> guard{mutex_};
    redis_->run({"EVAL", release_script, "1", "troupe:claim:" + id.str(), self_claim_});
  } catch (const runtime::redis_error& e) {
    // Not fatal: a claim of ours that outlives us is taken over once we are gone.
    runtime::log::warn("cluster", "claim_release_failed",
                       {{"agent", id.str()}, {"reason", e.what()}});
  }
}

} // namespace troupe::cluster
