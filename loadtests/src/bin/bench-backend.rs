//! `bench-backend`: the benchmark's upstream. Answers every request with 200 and a
//! body of `?bytes=N` bytes (default 2), over HTTP/1.1 keep-alive, on one thread.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Benchmark backend.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
}

/// Bodies are cut from one buffer so answering never allocates a body.
static BODY: [u8; 65536] = [b'x'; 65536];

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("bytes=")))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(2)
        .min(BODY.len());
    Ok(Response::new(Full::new(Bytes::from_static(&BODY[..n]))))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(cli.listen).await?;
        println!("bench-backend listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer));
                let _ = conn.await;
            });
        }
    })
}
