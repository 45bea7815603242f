//! Linux's `TCP_DEFER_ACCEPT` on a listening socket (tcp(7)), the one socket option Comet sets
//! that no well-kept crate offers safely: socket2 0.6, nix 0.31 and rustix 1.1 do not have it,
//! and std's `TcpStreamExt::set_deferaccept` is unstable (rust-lang/rust issue 119639). When that
//! is stable, this crate goes. The rest of the workspace forbids `unsafe`; here it is allowed on
//! one `setsockopt(2)` and one `getsockopt(2)` call, each with an `int` option.
//!
//! With the option set, the kernel completes the TCP handshake itself and wakes the listener
//! only once the client's first data (an HTTP request head, a TLS ClientHello) has arrived: one
//! wakeup per connection instead of two (accept, then readable), and no read that finds nothing.
//! A client that connects and sends nothing is accepted when the period ends, at the next
//! retransmitted SYN-ACK the client answers, so the server's own header-read timeout still
//! applies to it; connect-only health checks still see the connection open.

#[cfg(target_os = "linux")]
use std::mem::size_of;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::{io, time::Duration};

/// Sets `TCP_DEFER_ACCEPT` on the listening socket `listener` to `period` (whole seconds,
/// rounded down; Linux turns it into a count of SYN-ACK retransmissions, tcp(7)). A zero period
/// turns the option off. Set it before or after `listen(2)`.
///
/// # Errors
/// The `setsockopt(2)` error: `ENOTSOCK` when `listener` is not a socket, `ENOPROTOOPT` or
/// `EOPNOTSUPP` when it is not a TCP socket. `Unsupported` on systems other than Linux.
pub fn set_tcp_defer_accept(listener: BorrowedFd<'_>, period: Duration) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let secs = libc::c_int::try_from(period.as_secs()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `listener` is an open descriptor for the call's duration (BorrowedFd), and the
        // option value points at a live `c_int` whose size is passed with it.
        #[allow(unsafe_code)]
        let status = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&raw const secs).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if status == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (listener, period);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TCP_DEFER_ACCEPT is Linux's",
        ))
    }
}

/// The `TCP_DEFER_ACCEPT` period of `listener` as Linux reports it: the period set, rounded to
/// the retransmission schedule; zero when the option is off.
///
/// # Errors
/// The `getsockopt(2)` error, as for [`set_tcp_defer_accept`]. `Unsupported` on systems other
/// than Linux.
pub fn tcp_defer_accept(listener: BorrowedFd<'_>) -> io::Result<Duration> {
    #[cfg(target_os = "linux")]
    {
        let mut secs: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: as in `set_tcp_defer_accept`; `secs` and `len` are live and writable, and
        // `len` holds `secs`'s size.
        #[allow(unsafe_code)]
        let status = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&raw mut secs).cast(),
                &raw mut len,
            )
        };
        if status == 0 {
            Ok(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = listener;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "TCP_DEFER_ACCEPT is Linux's",
        ))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::fd::AsFd;

    #[test]
    fn the_period_set_is_the_period_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(tcp_defer_accept(listener.as_fd()).unwrap(), Duration::ZERO);
        set_tcp_defer_accept(listener.as_fd(), Duration::from_secs(1)).unwrap();
        assert_eq!(tcp_defer_accept(listener.as_fd()).unwrap(), Duration::from_secs(1));
        set_tcp_defer_accept(listener.as_fd(), Duration::from_millis(1_999)).unwrap();
        assert_eq!(
            tcp_defer_accept(listener.as_fd()).unwrap(),
            Duration::from_secs(1),
            "rounded down"
        );
        set_tcp_defer_accept(listener.as_fd(), Duration::ZERO).unwrap();
        assert_eq!(tcp_defer_accept(listener.as_fd()).unwrap(), Duration::ZERO);
    }

    #[test]
    fn what_is_not_a_tcp_socket_is_refused_with_the_kernels_error() {
        let file = tempfile::tempfile().unwrap();
        let err = set_tcp_defer_accept(file.as_fd(), Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK), "{err}");
        assert_eq!(
            tcp_defer_accept(file.as_fd()).unwrap_err().raw_os_error(),
            Some(libc::ENOTSOCK)
        );
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = set_tcp_defer_accept(udp.as_fd(), Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP)),
            "{err}"
        );
        // The file and the socket are still usable: nothing was changed.
        assert!(udp.local_addr().is_ok());
    }

    /// The option's effect: a connection is not handed to `accept` until its first bytes are
    /// in, and then they are there to read at once.
    #[test]
    fn a_connection_is_accepted_once_its_first_bytes_are_in() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_tcp_defer_accept(listener.as_fd(), Duration::from_secs(5)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // The handshake is done on the client's side; the listener has nothing to accept.
        std::thread::sleep(Duration::from_millis(200));
        let err = listener.accept().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "accepted before any data: {err}");
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let (mut accepted, _) = loop {
            match listener.accept() {
                Ok(pair) => break pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("not accepted after the request was sent: {e}"),
            }
        };
        accepted.set_nonblocking(true).unwrap();
        let mut head = [0u8; 64];
        let n = accepted.read(&mut head).expect("the request is there to read at once");
        assert_eq!(&head[..n], b"GET / HTTP/1.1\r\n\r\n");
    }
}
