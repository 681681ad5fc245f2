#include "nodes/http_call.hpp"
#include "nodes/client_tls.hpp"
#include "runtime/http_url.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

namespace troupe::gateway {

namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = boost::asio::ssl;
using tcp = boost::asio::ip::tcp;

namespace {

template <class Stream>
http_reply exchange(Stream& stream, const runtime::http_url& u, const std::string& key,
                    const std::string& method, const std::string& target,
                    const std::string& user_agent) {
  http::request<http::string_body> req{http::string_to_verb(method), u.path + target, 11};
  req.set(http::field::host, u.authority());
  req.set(http::field::user_agent, user_agent);
  if (!key.empty()) req.set(http::field::authorization, "Bearer " + key);
  req.prepare_payload();
  http::write(stream, req);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(stream, buf, res);
  return {static_cast<int>(res.result_int()), std::move(res.body())};
}

} // namespace

http_reply http_call(const std::string& url, const std::string& key, const std::string& method,
                     const std::string& target, const std::string& user_agent) {
  auto u = runtime::http_url::parse(url);
  boost::asio::io_context io;
  tcp::resolver resolver{io};
  if (!u.tls) {
    beast::tcp_stream stream{io};
    stream.expires_after(std::chrono::seconds(10));
    stream.connect(resolver.resolve(u.host, u.port));
    auto r = exchange(stream, u, key, method, target, user_agent);
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    return r;
  }
  auto ctx = client_tls_context();
  beast::ssl_stream<beast::tcp_stream> stream{io, ctx};
  verify_host(stream, u.host);
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
  beast::get_lowest_layer(stream).connect(resolver.resolve(u.host, u.port));
  stream.handshake(ssl::stream_base::client);
  auto r = exchange(stream, u, key, method, target, user_agent);
  beast::error_code ec;
  stream.shutdown(ec); // close_notify; a peer that just closes is fine
  return r;
}

} // namespace troupe::gateway
