#include "actors/stable_address.hpp"
#include "actors/messages.hpp"

#include <caf/all.hpp>

namespace troupe::actors {

namespace {

struct address_state {
  std::shared_ptr<incarnation_cell> cell;
  std::string child;
  caf::actor_addr watched; // the incarnation whose end clears the cell
  static inline const char* name = "stable_address";
};

/// Never sent: an actor with an empty behavior would terminate at once.
using never_atom = caf::atom_constant<caf::atom("never")>;

using address_actor = caf::stateful_actor<address_state>;

caf::behavior address_impl(address_actor* self, std::shared_ptr<incarnation_cell> cell,
                           std::string name) {
  self->state.cell = std::move(cell);
  self->state.child = std::move(name);
  self->set_down_handler([self](caf::down_msg& dm) { self->state.cell->clear_if(dm.source); });
  self->set_default_handler(
      [](caf::scheduled_actor* ptr, caf::message_view& xs) -> caf::result<caf::message> {
        auto* self = static_cast<address_actor*>(ptr);
        auto target = self->state.cell->get();
        if (!target) {
          // A request gets an answer; a plain message is dropped, since an
          // unexpected error message would terminate its sender.
          if (self->current_message_id().is_request())
            return make_error(runtime::errc::internal, self->state.child + " is not running");
          return caf::message{};
        }
        if (target.address() != self->state.watched) {
          self->state.watched = target.address();
          self->monitor(target);
        }
        auto rp = self->make_response_promise();
        rp.delegate(target, xs.move_content_to_message());
        return rp;
      });
  return {[](never_atom) {}}; // everything else goes through the default handler
}

} // namespace

caf::actor spawn_stable_address(caf::actor_system& sys, std::shared_ptr<incarnation_cell> cell,
                                std::string name) {
  return sys.spawn(address_impl, std::move(cell), std::move(name));
}

} // namespace troupe::actors
