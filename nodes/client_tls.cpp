#include "nodes/client_tls.hpp"

#include <cstdlib>

namespace troupe::gateway {

namespace ssl = boost::asio::ssl;

ssl::context client_tls_context() {
  ssl::context ctx{ssl::context::tls_client};
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  ctx.set_default_verify_paths();
  if (const char* ca = std::getenv("TROUPE_CA_FILE"); ca && *ca) ctx.load_verify_file(ca);
  ctx.set_verify_mode(ssl::verify_peer);
  return ctx;
}

} // namespace troupe::gateway
