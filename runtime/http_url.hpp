#pragma once

#include <string>

namespace troupe::runtime {

/// The parts of an `http[s]://host[:port][/path]` URL that a client needs.
/// `path` has no trailing slash and may be empty (routes are appended to it).
struct http_url {
  std::string host;
  std::string port = "80"; // 443 for https
  std::string path;
  bool tls = false; // https://

  /// Splits `url`; the scheme is optional. No validation: config checks the
  /// `http://` prefix where a URL comes from.
  static http_url parse(const std::string& url);

  /// `host:port`, for the Host header.
  std::string authority() const { return host + ":" + port; }
};

} // namespace troupe::runtime
