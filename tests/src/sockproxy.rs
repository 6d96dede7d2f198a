//! A cuttable proxy in front of the Docker socket: TCP on loopback → the unix socket. Tests point
//! DOCKER_HOST at it and cut it to simulate the Docker API going away (all connections closed,
//! new ones refused) — then restore it.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::watch;

pub struct SocketProxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.cut.send(true);
    }
}

impl SocketProxy {
    pub async fn start(unix_path: &str) -> SocketProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let (cut, cut_rx) = watch::channel(false);
        let path = Arc::new(unix_path.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                if *cut_rx.borrow() {
                    drop(tcp); // closed at once: the client sees a reset/EOF
                    continue;
                }
                let path = path.clone();
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut unix) = UnixStream::connect(path.as_str()).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        SocketProxy { addr, cut, task }
    }

    pub fn docker_host(&self) -> String {
        format!("tcp://{}", self.addr)
    }
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }
    pub fn restore(&self) {
        let _ = self.cut.send(false);
    }
}
