// HTTP/JSON front of the serving engine (cpp-httplib), torch-free. Routes (JSON bodies):
//   POST /v1/recommend  {user_id | history, history_times?, k?, exclude_seen?, at?, ignore_unknown_items?}
//   POST /v1/rank       {user_id | history, history_times?, candidates, at?, ignore_unknown_items?}
//   POST /v1/events     {user_id, item_id, timestamp?, action?} or {"events": [...]} (+ ignore_unknown_items?)
//   POST /v1/reload     {run_dir}                      (write endpoint)
//   GET  /v1/models, GET /healthz, GET /metrics (Prometheus text format)
// Write endpoints (events, reload) require "Authorization: Bearer TOKEN" when a token is set.
// Bad requests get 4xx with {"error": {"code": ..., "message": ...}}; the server keeps serving.
// See docs/serving.md for the full API.
//
// Threads: httplib accepts on the thread that calls run() and hands each connection to a pool
// of `workers` threads; every handler calls the (thread-safe) engine directly, so concurrent
// recommend requests meet in the engine's micro-batcher. A watcher thread waits on a self-pipe
// for request_stop() and then shuts the server down (see run()).
//
// Example:
//   serve::Engine engine(serve::EngineOptions{"runs/demo-hstu"});
//   HttpServer server(engine, HttpOptions{});
//   server.bind();                 // throws IOError when the port is taken
//   /* install signal handlers that call server.request_stop() */
//   if (!server.run()) std::_Exit(1);   // drain timed out: handlers still hold the engine
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "genrec/serve/engine.h"

namespace genrec::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                      // 0 = any free port (see HttpServer::port())
  int workers = 8;                      // HTTP worker threads
  size_t max_body_bytes = 1 << 20;      // larger bodies: 413
  int64_t request_timeout_ms = 10000;   // read/write timeouts and the per-request deadline
  std::string token;                    // bearer token for write endpoints; empty = no auth
  // Keep-alive: an idle connection is closed after this many seconds, a busy one after this many
  // requests (each open connection holds a worker thread while it lives).
  int keep_alive_timeout_s = 2;
  size_t keep_alive_max_requests = 100;
  // Shutdown: the longest wait for in-flight requests to finish; 0 = request_timeout_ms + 5 s.
  int64_t drain_timeout_ms = 0;
};

class HttpServer {
 public:
  HttpServer(serve::Engine& engine, HttpOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the socket (throws IOError when the address is taken); port() is valid afterwards.
  void bind();
  int port() const;
  // Serves until request_stop(); then stops accepting connections, lets the requests already
  // being read or handled finish (new requests on open keep-alive connections are still answered,
  // with "Connection: close") and returns true once they have drained. Returns false when they
  // did not drain within drain_timeout_ms: worker threads may still be using the engine, so the
  // caller must then exit the process without destroying the engine or this object (std::_Exit).
  // Throws IOError when accepting connections fails for another reason.
  bool run();
  // Thread-safe and async-signal-safe to request (sets a flag a watcher thread acts on).
  void request_stop();
  // True once request_stop() was called.
  bool stopping() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace genrec::server
