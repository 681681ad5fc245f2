#pragma once

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>

#include <string>

namespace troupe::gateway {

/// The TLS settings of Troupe's own clients of a gateway (`troupe ctl`,
/// `troupe load`): TLS 1.2+, the peer's certificate checked against the
/// system's CAs plus `$TROUPE_CA_FILE` (a private CA or a self-signed
/// gateway). The host name is checked per stream (`verify_host`).
boost::asio::ssl::context client_tls_context();

/// Sends `host` as SNI and checks the certificate names it; `Stream` is a
/// `boost::beast::ssl_stream` or an `asio::ssl::stream`.
template <class Stream> void verify_host(Stream& stream, const std::string& host) {
  SSL_set_tlsext_host_name(stream.native_handle(), host.c_str());
  stream.set_verify_callback(boost::asio::ssl::host_name_verification(host));
}

} // namespace troupe::gateway
