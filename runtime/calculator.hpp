#pragma once

#include <string>
#include <string_view>
#include <variant>

namespace troupe::runtime {

/// Evaluates an arithmetic expression: numbers, + - * / % ^, parentheses,
/// unary minus and the functions sqrt abs floor ceil round ln log exp sin cos
/// tan min max pow. Pure parsing; nothing is ever executed. Returns the value
/// or an error message naming the position.
std::variant<double, std::string> evaluate_expression(std::string_view expr);

/// Formats a result the way a person writes it: integers without ".0".
std::string format_number(double value);

} // namespace troupe::runtime
