#include <mosquitto.h>
// The client's own network loop (MQTTClient's NetworkLoop) waits with poll() and is woken
// through an eventfd.
#include <poll.h>
#include <sys/eventfd.h>
