//! SO_ORIGINAL_DST: the address a redirected connection was dialed to, before nftables
//! rewrote it to the outbound listener. Conntrack keeps the original tuple; this reads it.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

/// The VIP:port the app dialed. For a connection that was not redirected this is the listener's
/// own address (or ENOENT when conntrack does not track it), so callers must check the result
/// is a VIP before trusting it.
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddrV4> {
    let sa = getsockopt(stream, sockopt::OriginalDst).map_err(io::Error::from)?;
    // Both fields are in network byte order, as in every sockaddr_in.
    Ok(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    ))
}
