#include "examples/weather_agent.hpp"

#include <functional>

namespace troupe::examples {

namespace {

/// The tool's arguments, parsed from the model's JSON by nlohmann.
struct forecast_args {
  std::string city;
  int days = 1;
};

void from_json(const nlohmann::json& j, forecast_args& a) {
  j.at("city").get_to(a.city);
  if (j.contains("days")) j.at("days").get_to(a.days);
}

runtime::tool_outcome forecast(const forecast_args& a) {
  if (a.city.empty()) return {"city must not be empty", true};
  if (a.days < 1 || a.days > 7) return {"days must be between 1 and 7", true};
  // Deterministic stand-in for a weather service: the same city always
  // gets the same sky, so examples and tests can rely on it.
  static const char* skies[] = {"sunny", "cloudy", "rainy", "windy", "snowy"};
  auto h = std::hash<std::string>{}(a.city);
  auto temp = static_cast<int>(h % 30) - 5;
  return {a.city + ": " + skies[h % 5] + ", " + std::to_string(temp) + " C", false};
}

} // namespace

void register_weather_agent(runtime::agent_type_registry& registry) {
  runtime::agent_type_config cfg;
  cfg.name = "weather";
  cfg.system = "You answer questions about the weather. Use the forecast tool.";
  cfg.tools = {"clock"};
  cfg.max_steps = 4;
  registry.add_cpp_type(
      cfg,
      {runtime::make_typed_tool<forecast_args>(
          "forecast", "Weather forecast for a city.",
          R"({"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city"]})",
          forecast)});
}

} // namespace troupe::examples
