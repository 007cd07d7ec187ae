/*
 * Hostile model: in its first doStep creates a TCP socket and connects to
 * 127.0.0.1:<port> (integer parameter "port", default 5432, the PostgreSQL
 * port). Returns fmi2Error with "socket blocked: <reason>" when either fails,
 * and fmi2OK with "socket connected" when it got through.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define N_INTEGERS 1
#define N_STRINGS 0

#include "hostile_base.c"

enum { PORT };

static void hostile_defaults(Model *m) { m->i[PORT] = 5432; }

static fmi2Status hostile_action(Model *m) {
    model_log(m, fmi2OK, "logAll", "open_socket: connecting to 127.0.0.1:%d", m->i[PORT]);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        model_log(m, fmi2Error, "logStatusError", "socket blocked: socket(): %s", strerror(errno));
        return fmi2Error;
    }
    struct sockaddr_in address;
    memset(&address, 0, sizeof(address));
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)m->i[PORT]);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
        model_log(m, fmi2Error, "logStatusError", "socket blocked: connect(127.0.0.1:%d): %s",
                  m->i[PORT], strerror(errno));
        close(fd);
        return fmi2Error;
    }
    model_log(m, fmi2OK, "logAll", "socket connected to 127.0.0.1:%d", m->i[PORT]);
    close(fd);
    return fmi2OK;
}
