//! Addresses that refuse connections.

use std::net::SocketAddr;

/// A loopback address that refuses connections for as long as it is held: a socket bound
/// there without listening, so the kernel answers every SYN with a reset and no other socket
/// can bind the port meanwhile (it is bound without `SO_REUSEADDR`, which listeners that set
/// it would otherwise share).
pub struct Refusing {
    /// The address.
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl Refusing {
    /// Binds a free loopback port, without listening.
    ///
    /// # Panics
    /// When no socket can be bound.
    pub fn bind() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("binding 127.0.0.1:0");
        Self {
            addr: socket.local_addr().expect("a bound address"),
            _socket: socket,
        }
    }
}
