#include "runtime/calculator.hpp"

#include <gtest/gtest.h>

using namespace troupe::runtime;

namespace {

double value_of(std::string_view expr) {
  auto r = evaluate_expression(expr);
  EXPECT_TRUE(std::holds_alternative<double>(r)) << expr << ": " << std::get<std::string>(r);
  return std::holds_alternative<double>(r) ? std::get<double>(r) : 0;
}

std::string error_of(std::string_view expr) {
  auto r = evaluate_expression(expr);
  EXPECT_TRUE(std::holds_alternative<std::string>(r)) << expr;
  return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : "";
}

} // namespace

TEST(Calculator, RespectsPrecedenceAndParentheses) {
  EXPECT_EQ(value_of("2+3*4"), 14);
  EXPECT_EQ(value_of("(2+3)*4"), 20);
  EXPECT_EQ(value_of("2^3^2"), 512);
  EXPECT_EQ(value_of("-2^2"), -4);
  EXPECT_EQ(value_of("10 % 4"), 2);
  EXPECT_DOUBLE_EQ(value_of("7/2"), 3.5);
}

TEST(Calculator, KnowsFunctionsAndConstants) {
  EXPECT_EQ(value_of("sqrt(16) + abs(-2)"), 6);
  EXPECT_EQ(value_of("max(3, 9) - min(3, 9)"), 6);
  EXPECT_NEAR(value_of("2*pi"), 6.283185307, 1e-6);
  EXPECT_EQ(value_of("1.5e3"), 1500);
}

TEST(Calculator, RejectsBadInputWithPosition) {
  EXPECT_NE(error_of("1/0").find("division by zero"), std::string::npos);
  EXPECT_NE(error_of("2+").find("end of expression"), std::string::npos);
  EXPECT_NE(error_of("system(\"rm\")").find("unknown function"), std::string::npos);
  EXPECT_NE(error_of("2 $ 3").find("position 3"), std::string::npos);
  EXPECT_NE(error_of("(1+2").find("expected ')'"), std::string::npos);
  EXPECT_NE(error_of("sqrt(-1)").find("negative"), std::string::npos);
}

TEST(Calculator, DeepNestingIsAnErrorNotACrash) {
  std::string deep(5000, '(');
  deep += "1";
  deep += std::string(5000, ')');
  error_of(deep);
  std::string nested;
  for (int i = 0; i < 1000; ++i)
    nested += "(";
  nested += "1";
  for (int i = 0; i < 1000; ++i)
    nested += ")";
  EXPECT_NE(error_of(nested).find("nested too deeply"), std::string::npos);
}

TEST(Calculator, FormatsIntegersWithoutFraction) {
  EXPECT_EQ(format_number(14), "14");
  EXPECT_EQ(format_number(-3), "-3");
  EXPECT_EQ(format_number(3.5), "3.5");
}
