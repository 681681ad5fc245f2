#include "runtime/simulated_model.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>

namespace troupe::runtime {

namespace {

bool offers(const chat_request& req, const std::string& tool) {
  return std::any_of(req.tools.begin(), req.tools.end(),
                     [&](const tool_spec& t) { return t.name == tool; });
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool is_expr_char(char c) {
  return std::isdigit(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '*' ||
         c == '/' || c == '(' || c == ')' || c == '.' || c == '^' || c == '%' || c == ' ';
}

/// Finds the longest run of expression characters that holds a binary
/// operator between two digits, e.g. "(2+3)*4" in "what is (2+3)*4?".
std::string find_arithmetic(const std::string& text) {
  std::string best;
  size_t i = 0;
  while (i < text.size()) {
    if (!is_expr_char(text[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && is_expr_char(text[j]))
      ++j;
    std::string run = text.substr(i, j - i);
    while (!run.empty() && run.back() == ' ')
      run.pop_back();
    while (!run.empty() && run.front() == ' ')
      run.erase(run.begin());
    bool digit = false, op_after_digit = false, digit_after_op = false;
    for (char c : run) {
      if (std::isdigit(static_cast<unsigned char>(c))) {
        if (op_after_digit) digit_after_op = true;
        digit = true;
      } else if (digit && (c == '+' || c == '-' || c == '*' || c == '/' || c == '^' || c == '%')) {
        op_after_digit = true;
      }
    }
    if (digit_after_op && run.size() > best.size()) best = run;
    i = j;
  }
  return best;
}

int64_t estimate_tokens(const std::string& s) {
  return static_cast<int64_t>(s.size() / 4 + 1);
}

} // namespace

std::vector<std::string> split_tokens(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text) {
    if (c == ' ' && !cur.empty() && cur != " ") {
      out.push_back(std::move(cur));
      cur.clear();
    }
    cur.push_back(c);
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

simulated_plan plan_simulated_response(const chat_request& req) {
  simulated_plan plan;
  plan.finish_reason = "stop";
  for (auto& m : req.messages)
    plan.tokens_used.prompt_tokens += estimate_tokens(m.content) + 4;

  std::string answer;
  if (!req.messages.empty() && req.messages.back().role == "tool") {
    // Quote every tool result since the last assistant message.
    size_t first = req.messages.size();
    while (first > 0 && req.messages[first - 1].role == "tool")
      --first;
    for (size_t i = first; i < req.messages.size(); ++i) {
      auto& m = req.messages[i];
      if (!answer.empty()) answer += ' ';
      if (m.name == "calculator")
        answer += "The result is " + m.content + ".";
      else if (m.name == "clock")
        answer += "The time is " + m.content + ".";
      else
        answer +=
            "The " + (m.name.empty() ? std::string{"tool"} : m.name) + " tool said: " + m.content;
    }
  } else {
    std::string text;
    for (auto it = req.messages.rbegin(); it != req.messages.rend(); ++it)
      if (it->role == "user") {
        text = it->content;
        break;
      }
    auto low = lower(text);
    auto call = [&](std::string name, nlohmann::json args) {
      plan.tool_calls.push_back({"call_" + std::to_string(req.messages.size()) + "_" +
                                     std::to_string(plan.tool_calls.size()),
                                 std::move(name), args.dump()});
      plan.finish_reason = "tool_calls";
    };
    std::string use_tool, use_args;
    if (low.rfind("use ", 0) == 0) {
      auto rest = text.substr(4);
      auto sp = rest.find(' ');
      use_tool = rest.substr(0, sp);
      use_args = sp == std::string::npos ? "{}" : rest.substr(sp + 1);
    }
    if (!use_tool.empty() && offers(req, use_tool)) {
      auto args = nlohmann::json::parse(use_args, nullptr, false);
      call(use_tool, args.is_discarded() ? nlohmann::json{{"input", use_args}} : args);
    } else if (low.find("what did i say first") != std::string::npos) {
      // Shows the conversation survived: quotes the first user message.
      for (auto& m : req.messages)
        if (m.role == "user") {
          answer = "You first said: " + m.content;
          break;
        }
    } else if (auto pos = low.find("count to "); pos != std::string::npos) {
      long n = std::strtol(low.c_str() + pos + 9, nullptr, 10);
      n = std::clamp(n, 1L, 100000L);
      for (long i = 1; i <= n; ++i)
        answer += (i == 1 ? "" : " ") + std::to_string(i);
    } else if (low.rfind("ask ", 0) == 0 && offers(req, "agent")) {
      auto rest = text.substr(4);
      auto sep = rest.find_first_of(": ");
      std::string target = rest.substr(0, sep);
      std::string message = sep == std::string::npos ? std::string{} : rest.substr(sep + 1);
      while (!message.empty() && (message.front() == ' ' || message.front() == ':'))
        message.erase(message.begin());
      call("agent", {{"agent", target}, {"message", message}});
    } else if (low.find("what time") != std::string::npos && offers(req, "clock")) {
      call("clock", nlohmann::json::object());
    } else if (auto expr = find_arithmetic(text); !expr.empty() && offers(req, "calculator")) {
      call("calculator", {{"expression", expr}});
    } else {
      answer = "You said: " + text;
    }
  }
  if (plan.tool_calls.empty()) plan.tokens = split_tokens(answer);
  plan.tokens_used.completion_tokens = plan.tool_calls.empty()
                                           ? static_cast<int64_t>(plan.tokens.size())
                                           : static_cast<int64_t>(plan.tool_calls.size()) * 8;
  return plan;
}

} // namespace troupe::runtime
