#pragma once

#include <string>

namespace troupe::gateway {

struct http_reply {
  int status = 0;
  std::string body;
};

/// One blocking HTTP request to a gateway (`troupe ctl`, `troupe load`):
/// `method` ("GET", "POST") on `url`'s path + `target`, with `key` as a
/// bearer token when set, within 10 s. `https://` verifies the gateway's
/// certificate against the system's CAs and `$TROUPE_CA_FILE`. Throws on
/// network and TLS errors. Not for actors or I/O threads.
http_reply http_call(const std::string& url, const std::string& key, const std::string& method,
                     const std::string& target, const std::string& user_agent);

} // namespace troupe::gateway
