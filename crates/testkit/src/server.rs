//! Serving a test double over a real socket.

use std::net::SocketAddr;

/// Serves `app` (a test double: a fake NEAR AI gateway, NRAS, a misbehaving node) on a loopback
/// port from its own thread and runtime, and returns its address at once.
///
/// For tests that talk to the double over real sockets from another process or another runtime
/// (the `cloister` binary under test, a blocking client). The server lives as long as the test
/// process.
///
/// ```no_run
/// let addr = cloister_testkit::serve_in_thread(axum::Router::new());
/// let url = format!("http://{addr}/v1");
/// ```
///
/// # Panics
/// If no loopback port can be bound or no runtime built: the test cannot run.
#[allow(clippy::expect_used)] // test support: a failure here is a broken test machine
pub fn serve_in_thread(app: axum::Router) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.set_nonblocking(true).expect("a non-blocking listener");
    let addr = listener.local_addr().expect("the listener's address");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            axum::serve(listener, app)
                .await
                .expect("the test double's server");
        });
    });
    addr
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use std::io::{Read, Write};

    use axum::routing::get;

    use super::*;

    #[test]
    fn serves_the_router_from_a_plain_thread() {
        let addr = serve_in_thread(axum::Router::new().route("/ping", get(|| async { "pong" })));
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.write_all(b"GET /ping HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .expect("write");
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("pong"), "{answer}");
    }
}
