#include "runtime/calculator.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <vector>

namespace troupe::runtime {

namespace {

/// Recursive-descent parser. Depth is bounded so hostile input cannot
/// overflow the stack.
class parser {
public:
  explicit parser(std::string_view s) : s_(s) {}

  double parse() {
    double v = expr();
    skip();
    if (pos_ != s_.size()) fail("unexpected '" + std::string(1, s_[pos_]) + "'");
    return v;
  }

  std::string error;

private:
  struct failed {};

  [[noreturn]] void fail(const std::string& what) {
    error = what + " at position " + std::to_string(pos_ + 1);
    throw failed{};
  }

  void skip() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_])))
      ++pos_;
  }

  bool eat(char c) {
    skip();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  double expr() {
    double v = term();
    for (;;) {
      if (eat('+'))
        v += term();
      else if (eat('-'))
        v -= term();
      else
        return v;
    }
  }

  double term() {
    double v = unary();
    for (;;) {
      if (eat('*')) {
        v *= unary();
      } else if (eat('/')) {
        double d = unary();
        if (d == 0) fail("division by zero");
        v /= d;
      } else if (eat('%')) {
        double d = unary();
        if (d == 0) fail("division by zero");
        v = std::fmod(v, d);
      } else {
        return v;
      }
    }
  }

  double unary() {
    if (eat('-')) return -unary();
    if (eat('+')) return unary();
    return power();
  }

  double power() {
    double base = primary();
    if (eat('^')) {
      guard g{*this};
      return std::pow(base, unary()); // right-associative
    }
    return base;
  }

  struct guard {
    explicit guard(parser& p) : p_(p) {
      if (++p_.depth_ > 200) p_.fail("expression nested too deeply");
    }
    ~guard() { --p_.depth_; }
    parser& p_;
  };

  double primary() {
    guard g{*this};
    skip();
    if (pos_ >= s_.size()) fail("unexpected end of expression");
    char c = s_[pos_];
    if (c == '(') {
      ++pos_;
      double v = expr();
      if (!eat(')')) fail("expected ')'");
      return v;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') return number();
    if (std::isalpha(static_cast<unsigned char>(c))) return function();
    fail("unexpected '" + std::string(1, c) + "'");
  }

  double number() {
    size_t start = pos_;
    while (pos_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[pos_])) ||
                                s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E' ||
                                ((s_[pos_] == '-' || s_[pos_] == '+') && pos_ > start &&
                                 (s_[pos_ - 1] == 'e' || s_[pos_ - 1] == 'E'))))
      ++pos_;
    double v = 0;
    auto text = s_.substr(start, pos_ - start);
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || ptr != text.data() + text.size()) {
      pos_ = start;
      fail("malformed number '" + std::string(text) + "'");
    }
    return v;
  }

  double function() {
    size_t start = pos_;
    while (pos_ < s_.size() && std::isalnum(static_cast<unsigned char>(s_[pos_])))
      ++pos_;
    std::string name{s_.substr(start, pos_ - start)};
    if (name == "pi") return M_PI;
    if (name == "e") return M_E;
    if (!eat('(')) {
      pos_ = start;
      fail("unknown name '" + name + "'");
    }
    static const char* known[] = {"min",   "max", "pow", "sqrt", "abs", "floor", "ceil",
                                  "round", "ln",  "log", "exp",  "sin", "cos",   "tan"};
    if (std::find(std::begin(known), std::end(known), name) == std::end(known)) {
      pos_ = start;
      fail("unknown function '" + name + "'");
    }
    std::vector<double> args;
    if (!eat(')')) {
      do {
        args.push_back(expr());
      } while (eat(','));
      if (!eat(')')) fail("expected ')'");
    }
    auto want = [&](size_t n) {
      if (args.size() != n) {
        pos_ = start;
        fail(name + " takes " + std::to_string(n) + " argument(s)");
      }
    };
    if (name == "min" || name == "max" || name == "pow") {
      want(2);
      if (name == "min") return std::min(args[0], args[1]);
      if (name == "max") return std::max(args[0], args[1]);
      return std::pow(args[0], args[1]);
    }
    want(1);
    double x = args[0];
    if (name == "sqrt") {
      if (x < 0) fail("square root of a negative number");
      return std::sqrt(x);
    }
    if (name == "abs") return std::fabs(x);
    if (name == "floor") return std::floor(x);
    if (name == "ceil") return std::ceil(x);
    if (name == "round") return std::round(x);
    if (name == "ln" || name == "log") {
      if (x <= 0) fail("logarithm of a non-positive number");
      return name == "ln" ? std::log(x) : std::log10(x);
    }
    if (name == "exp") return std::exp(x);
    if (name == "sin") return std::sin(x);
    if (name == "cos") return std::cos(x);
    if (name == "tan") return std::tan(x);
    pos_ = start;
    fail("unknown function '" + name + "'");
  }

  std::string_view s_;
  size_t pos_ = 0;
  int depth_ = 0;
};

} // namespace

std::variant<double, std::string> evaluate_expression(std::string_view expr) {
  if (expr.size() > 4096) return std::string{"expression longer than 4096 characters"};
  parser p{expr};
  try {
    double v = p.parse();
    if (!std::isfinite(v)) return std::string{"result is not a finite number"};
    return v;
  } catch (...) {
    return p.error;
  }
}

std::string format_number(double value) {
  if (std::fabs(value) < 1e15 && value == std::floor(value)) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", value);
    return buf;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", value);
  return buf;
}

} // namespace troupe::runtime
