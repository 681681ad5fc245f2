#include "runtime/http_url.hpp"

namespace troupe::runtime {

http_url http_url::parse(const std::string& url) {
  auto scheme = url.find("://");
  auto rest = scheme == std::string::npos ? url : url.substr(scheme + 3);
  auto slash = rest.find('/');
  auto hostport = rest.substr(0, slash);
  http_url u;
  if (url.rfind("https://", 0) == 0) {
    u.tls = true;
    u.port = "443";
  }
  u.path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!u.path.empty() && u.path.back() == '/')
    u.path.pop_back();
  auto colon = hostport.rfind(':');
  u.host = hostport.substr(0, colon);
  if (colon != std::string::npos) u.port = hostport.substr(colon + 1);
  return u;
}

} // namespace troupe::runtime
