//! A real HTTP receiver on loopback for the delivery tests: an axum server on its own
//! runtime thread, so that [`Receiver::stop`] drops the listener *and* every open
//! connection (a receiver that is down refuses connections; nothing lingers in a keep-alive
//! pool), and [`Receiver::start_again`] listens on the same port again.
//!
//! Every request is recorded (path with query, headers, body, arrival time) and answered by
//! the script of its path: queued [`Reply`]s first, then the path's default (200 with
//! `{"errcode":0,"errmsg":"ok"}`, which also satisfies the robot channels).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 `{"errcode":0,"errmsg":"ok"}`.
    Ok,
    /// This status, empty body.
    Status(u16),
    /// This status with `Retry-After: secs`.
    RetryAfter(u16, u64),
    /// Never answer (the client must time out).
    Hang,
    /// 200 with a robot error code.
    Errcode(i64),
    /// 200 `{"errcode":0,"errmsg":"ok"}` after this many ms (a slow receiver).
    Delay(u64),
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Got {
    /// Path and query.
    pub uri: String,
    /// Headers, names lowercase.
    pub headers: HashMap<String, String>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl Got {
    /// The body as JSON (panics with the body: test code).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }

    /// A header (lowercase name).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<Reply>>,
    defaults: HashMap<String, Reply>,
    got: Vec<Got>,
    /// Requests being answered now, and the most at once so far.
    in_flight: usize,
    max_in_flight: usize,
}

/// Counts a request as being answered until dropped.
struct Answering(Arc<Mutex<State>>);

impl Drop for Answering {
    fn drop(&mut self) {
        let mut s = self.0.lock().expect("receiver state");
        s.in_flight -= 1;
    }
}

/// The receiver (see the module docs).
pub struct Receiver {
    /// Its loopback port.
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

async fn handle(state: Arc<Mutex<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let reply = {
        let mut s = state.lock().expect("receiver state");
        s.got.push(Got {
            uri: uri.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: body.to_vec(),
            at: Instant::now(),
        });
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        let scripted = s.scripts.get_mut(&path).and_then(VecDeque::pop_front);
        scripted.unwrap_or_else(|| s.defaults.get(&path).cloned().unwrap_or(Reply::Ok))
    };
    let _answering = Answering(state.clone());
    let ok = r#"{"errcode":0,"errmsg":"ok"}"#;
    match reply {
        Reply::Ok => (StatusCode::OK, ok).into_response(),
        Reply::Delay(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (StatusCode::OK, ok).into_response()
        }
        Reply::Status(c) => StatusCode::from_u16(c)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        Reply::RetryAfter(c, secs) => (
            StatusCode::from_u16(c).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            [("retry-after", secs.to_string())],
            "slow down",
        )
            .into_response(),
        Reply::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        Reply::Errcode(c) => (
            StatusCode::OK,
            format!(r#"{{"errcode":{c},"errmsg":"test"}}"#),
        )
            .into_response(),
    }
}

impl Receiver {
    /// Starts on a free loopback port.
    pub fn start() -> Result<Receiver> {
        let mut r = Receiver {
            port: super::free_port(),
            state: Arc::default(),
            stop: None,
        };
        r.start_again()?;
        Ok(r)
    }

    /// Listens again on the same port (after [`Receiver::stop`]); records are kept.
    pub fn start_again(&mut self) -> Result<()> {
        if self.stop.is_some() {
            return Ok(());
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port))?;
        listener.set_nonblocking(true)?;
        let state = self.state.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            rt.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().fallback(
                    move |uri: Uri, headers: HeaderMap, body: Bytes| {
                        handle(state.clone(), uri, headers, body)
                    },
                );
                let _ = axum::serve(listener, app).await;
            });
            // Runs the server until told to stop; dropping the runtime then drops the
            // listener and every connection task.
            rt.block_on(async {
                while rx.try_recv().is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            rt.shutdown_background();
        });
        self.stop = Some((tx, thread));
        Ok(())
    }

    /// Stops listening and closes every connection.
    pub fn stop(&mut self) {
        if let Some((tx, thread)) = self.stop.take() {
            let _ = tx.send(());
            let _ = thread.join();
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Queues replies for the next requests to `path`.
    pub fn script(&self, path: &str, replies: &[Reply]) {
        let mut s = self.state.lock().expect("receiver state");
        s.scripts
            .entry(path.to_string())
            .or_default()
            .extend(replies.iter().cloned());
    }

    /// The reply to `path` once its script is used up.
    pub fn set_default(&self, path: &str, reply: Reply) {
        let mut s = self.state.lock().expect("receiver state");
        s.defaults.insert(path.to_string(), reply);
    }

    /// The most requests (to any path) that were being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().expect("receiver state").max_in_flight
    }

    /// Every request to `path` so far, in arrival order.
    pub fn got(&self, path: &str) -> Vec<Got> {
        let s = self.state.lock().expect("receiver state");
        s.got.iter().filter(|g| g.path() == path).cloned().collect()
    }

    /// Waits until `path` got at least `n` requests for which `pred` holds.
    pub async fn wait_for(
        &self,
        path: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Got) -> bool,
    ) -> Result<Vec<Got>> {
        let deadline = Instant::now() + timeout;
        loop {
            let got: Vec<Got> = self.got(path).into_iter().filter(|g| pred(g)).collect();
            if got.len() >= n {
                return Ok(got);
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "{path}: {} of {n} requests after {timeout:?}",
                    got.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}
