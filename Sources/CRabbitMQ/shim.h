#if __has_include(<rabbitmq-c/amqp.h>)      /* rabbitmq-c >= 0.12 */
#include <rabbitmq-c/amqp.h>
#include <rabbitmq-c/tcp_socket.h>
#else                                        /* Debian 12 ships 0.11: flat headers */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#endif

/* amqp_login is C-variadic, which Swift cannot call: a fixed-arity wrapper for SASL PLAIN. */
static inline amqp_rpc_reply_t camqp_login_plain(amqp_connection_state_t s, const char *vhost,
    int channel_max, int frame_max, int heartbeat, const char *user, const char *password) {
  return amqp_login(s, vhost, channel_max, frame_max, heartbeat, AMQP_SASL_METHOD_PLAIN, user, password);
}
