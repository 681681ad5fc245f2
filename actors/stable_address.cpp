#include "actors/stable_address.hpp"
#include "actors/messages.hpp"

#include <caf/all.hpp>

#include <chrono>
#include <deque>

namespace troupe::actors {

namespace {

/// A message that came while no incarnation ran, kept until one does.
struct held {
  caf::response_promise rp; // carries the sender and request id
  caf::message msg;
  bool request = false; // only a request may get an error back
};

struct address_state {
  std::shared_ptr<incarnation_cell> cell;
  std::string child;
  caf::actor_addr watched; // the incarnation whose end clears the cell
  std::deque<held> waiting;
  std::chrono::steady_clock::time_point waiting_since;
  bool polling = false;
  static inline const char* name = "stable_address";
};

/// Never sent by others: an actor with an empty behavior would terminate at
/// once, and this one also paces the wait for a restart.
using poll_atom = caf::atom_constant<caf::atom("addrpoll")>;

/// A supervisor restarts a child within milliseconds; what arrives in that
/// gap waits (bounded, briefly) instead of failing.
constexpr size_t max_waiting = 10000;
constexpr auto max_wait = std::chrono::seconds(3);
constexpr auto poll_every = std::chrono::milliseconds(5);

using address_actor = caf::stateful_actor<address_state>;

void watch(address_actor* self, const caf::actor& target) {
  if (target.address() != self->state.watched) {
    self->state.watched = target.address();
    self->monitor(target);
  }
}

void release_waiting(address_actor* self) {
  auto& st = self->state;
  st.polling = false;
  if (st.waiting.empty()) return;
  if (auto target = st.cell->get()) {
    watch(self, target);
    for (auto& h : st.waiting)
      h.rp.delegate(target, std::move(h.msg));
    st.waiting.clear();
    return;
  }
  if (std::chrono::steady_clock::now() - st.waiting_since > max_wait) {
    // Given up by its supervisor, or too slow to come back: say so.
    for (auto& h : st.waiting)
      if (h.request)
        h.rp.deliver(make_error(runtime::errc::internal, st.child + " is not running"));
    st.waiting.clear();
    return;
  }
  st.polling = true;
  self->delayed_send(self, poll_every, poll_atom::value);
}

caf::behavior address_impl(address_actor* self, std::shared_ptr<incarnation_cell> cell,
                           std::string name) {
  self->state.cell = std::move(cell);
  self->state.child = std::move(name);
  self->set_down_handler([self](caf::down_msg& dm) { self->state.cell->clear_if(dm.source); });
  self->set_default_handler(
      [](caf::scheduled_actor* ptr, caf::message_view& xs) -> caf::result<caf::message> {
        auto* self = static_cast<address_actor*>(ptr);
        auto& st = self->state;
        auto target = st.cell->get();
        bool request = self->current_message_id().is_request();
        auto rp = self->make_response_promise();
        if (!target || !st.waiting.empty()) { // keep the order: behind those waiting
          if (st.waiting.size() >= max_waiting) {
            if (request)
              rp.deliver(make_error(runtime::errc::overloaded, st.child + " is restarting"));
            return rp;
          }
          if (st.waiting.empty()) st.waiting_since = std::chrono::steady_clock::now();
          st.waiting.push_back({rp, xs.move_content_to_message(), request});
          if (!st.polling) release_waiting(self);
          return rp;
        }
        watch(self, target);
        rp.delegate(target, xs.move_content_to_message());
        return rp;
      });
  return {[=](poll_atom) { release_waiting(self); }};
}

} // namespace

caf::actor spawn_stable_address(caf::actor_system& sys, std::shared_ptr<incarnation_cell> cell,
                                std::string name) {
  return sys.spawn(address_impl, std::move(cell), std::move(name));
}

} // namespace troupe::actors
