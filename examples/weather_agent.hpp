#pragma once

#include "runtime/tool.hpp"

namespace troupe::examples {

/// Registers the example C++ agent type `weather`, whose typed tool
/// `forecast` takes `{"city": "..."}`. Shows how a C++ agent type brings
/// its own tools; config may still override its prompt or model.
void register_weather_agent(runtime::agent_type_registry& registry);

} // namespace troupe::examples
