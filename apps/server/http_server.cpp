// HTTP routes and JSON mapping over serve::Engine (see http_server.h and docs/serving.md).
#include "http_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "genrec/core/log.h"
#include "metrics.h"

namespace genrec::server {

namespace {

using json = nlohmann::json;
using Clock = serve::Clock;

// A request the server answers with a 4xx status and a message (thrown inside handlers).
struct HttpError {
  int status;
  std::string message;
};

[[noreturn]] void bad_request(const std::string& message) { throw HttpError{400, message}; }

// JSON text that never throws on invalid UTF-8 (messages may quote the client's bytes).
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string error_body(int status, const std::string& message) {
  return dump(json{{"error", {{"code", status}, {"message", message}}}});
}

void set_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(error_body(status, message), "application/json");
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a non-integer number";
    default: return "a number";
  }
}

// Typed access to the fields of one JSON object, with messages naming the field ("k",
// "events[2].item_id"). A field given as null counts as absent. check_unknown() rejects fields
// outside `allowed`.
class Fields {
 public:
  Fields(const json& obj, std::string prefix, std::vector<std::string> allowed)
      : obj_(obj), prefix_(std::move(prefix)), allowed_(std::move(allowed)) {
    if (!obj_.is_object())
      bad_request((prefix_.empty() ? std::string("request body") : prefix_.substr(0, prefix_.size() - 1)) +
                  " must be a JSON object, got " + type_name(obj_));
  }

  void check_unknown() const {
    std::vector<std::string> unknown;
    for (const auto& [key, value] : obj_.items())
      if (std::find(allowed_.begin(), allowed_.end(), key) == allowed_.end()) unknown.push_back(key);
    if (unknown.empty()) return;
    std::string msg = unknown.size() == 1 ? "unknown field " : "unknown fields ";
    for (size_t i = 0; i < unknown.size(); ++i) msg += (i ? ", '" : "'") + prefix_ + unknown[i] + "'";
    msg += " (allowed: ";
    for (size_t i = 0; i < allowed_.size(); ++i) msg += (i ? ", " : "") + allowed_[i];
    bad_request(msg + ")");
  }

  bool has(const std::string& name) const {
    auto it = obj_.find(name);
    return it != obj_.end() && !it->is_null();
  }
  std::string name(const std::string& field) const { return prefix_ + field; }

  // A raw id: a non-empty string, or an integer (written in decimal).
  std::optional<std::string> id(const std::string& field) const {
    if (!has(field)) return std::nullopt;
    return id_value(obj_.at(field), name(field));
  }
  std::string required_id(const std::string& field) const {
    if (!has(field)) bad_request("missing field '" + name(field) + "'");
    return *id(field);
  }
  std::optional<std::string> string(const std::string& field) const {
    if (!has(field)) return std::nullopt;
    const json& v = obj_.at(field);
    if (!v.is_string()) bad_request("field '" + name(field) + "' must be a string, got " + type_name(v));
    return v.get<std::string>();
  }
  std::optional<bool> boolean(const std::string& field) const {
    if (!has(field)) return std::nullopt;
    const json& v = obj_.at(field);
    if (!v.is_boolean()) bad_request("field '" + name(field) + "' must be true or false, got " + type_name(v));
    return v.get<bool>();
  }
  std::optional<int64_t> integer(const std::string& field, int64_t lo, int64_t hi, const char* unit = "") const {
    if (!has(field)) return std::nullopt;
    return int_value(obj_.at(field), name(field), lo, hi, unit);
  }
  std::optional<std::vector<std::string>> id_array(const std::string& field, size_t min_size, size_t max_size) const {
    if (!has(field)) return std::nullopt;
    const json& v = array(field, min_size, max_size);
    std::vector<std::string> out;
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) out.push_back(id_value(v[i], name(field) + "[" + std::to_string(i) + "]"));
    return out;
  }
  std::optional<std::vector<int64_t>> int_array(const std::string& field, int64_t lo, int64_t hi,
                                                const char* unit = "") const {
    if (!has(field)) return std::nullopt;
    const json& v = array(field, 0, std::numeric_limits<size_t>::max());
    std::vector<int64_t> out;
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i)
      out.push_back(int_value(v[i], name(field) + "[" + std::to_string(i) + "]", lo, hi, unit));
    return out;
  }
  const json& array(const std::string& field, size_t min_size, size_t max_size) const {
    const json& v = obj_.at(field);
    if (!v.is_array()) bad_request("field '" + name(field) + "' must be an array, got " + type_name(v));
    if (v.size() < min_size)
      bad_request("field '" + name(field) + "' must have at least " + std::to_string(min_size) + " element" +
                  (min_size == 1 ? "" : "s"));
    if (v.size() > max_size)
      bad_request("field '" + name(field) + "' has " + std::to_string(v.size()) + " elements; at most " +
                  std::to_string(max_size) + " allowed");
    return v;
  }

 private:
  static std::string id_value(const json& v, const std::string& name) {
    if (v.is_string()) {
      std::string s = v.get<std::string>();
      if (s.empty()) bad_request("field '" + name + "' must not be empty");
      return s;
    }
    if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
    if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
    bad_request("field '" + name + "' must be a string (or an integer), got " + type_name(v));
  }
  static int64_t int_value(const json& v, const std::string& name, int64_t lo, int64_t hi, const char* unit) {
    if (!v.is_number_integer()) bad_request("field '" + name + "' must be an integer, got " + type_name(v));
    const bool too_big = v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi);
    const int64_t x = too_big ? hi : v.get<int64_t>();
    if (too_big || x < lo || x > hi)
      bad_request("field '" + name + "' must be in " + std::to_string(lo) + ".." + std::to_string(hi) + unit +
                  ", got " + v.dump());
    return x;
  }

  const json& obj_;
  std::string prefix_;
  std::vector<std::string> allowed_;
};

// Times are Unix seconds; the bound (year 5138) also catches milliseconds sent by mistake.
constexpr int64_t kMaxTime = 100000000000;
constexpr const char* kSeconds = " (Unix seconds)";
constexpr size_t kMaxCandidates = 10000;
constexpr int64_t kMaxK = 1000;

// user_id | history (+ history_times): whose history a recommend / rank request is about.
serve::HistorySpec parse_history(const Fields& f) {
  serve::HistorySpec h;
  const bool has_user = f.has("user_id"), has_hist = f.has("history");
  if (has_user == has_hist)
    bad_request(has_user ? "give either 'user_id' or 'history', not both" : "missing field 'user_id' or 'history'");
  if (has_user) {
    h.user = f.id("user_id");
    if (f.has("history_times")) bad_request("field 'history_times' goes with 'history', not with 'user_id'");
  } else {
    h.items = f.id_array("history", 0, std::numeric_limits<size_t>::max());
    h.times = f.int_array("history_times", 0, kMaxTime, kSeconds);
    if (h.times && h.times->size() != h.items->size())
      bad_request("field 'history_times' has " + std::to_string(h.times->size()) + " elements but 'history' has " +
                  std::to_string(h.items->size()));
  }
  return h;
}

json parse_body(const httplib::Request& req) {
  if (req.body.empty()) bad_request("empty request body; expected a JSON object");
  try {
    return json::parse(req.body);
  } catch (const json::parse_error& e) {
    bad_request(std::string("malformed JSON: ") + e.what());
  }
}

// Equal strings in time that depends only on the length of `secret`.
bool constant_time_equal(const std::string& given, const std::string& secret) {
  volatile unsigned char diff = given.size() == secret.size() ? 0 : 1;
  for (size_t i = 0; i < secret.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff = diff | (g ^ static_cast<unsigned char>(secret[i]));
  }
  return diff == 0;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

struct RequestClock {
  bool pending = false;  // counted in the in-flight gauge, not yet logged
  Clock::time_point start;
};
// Per worker thread: the request it is serving (httplib runs one request at a time per thread,
// from the pre-routing handler to the logger).
thread_local RequestClock t_request;

}  // namespace

struct HttpServer::Impl {
  serve::Engine& engine;
  HttpOptions opt;
  std::unique_ptr<httplib::Server> svr = std::make_unique<httplib::Server>();
  Metrics metrics;
  Clock::time_point started = Clock::now();

  int pipe_rd = -1, pipe_wr = -1;
  int listen_fd = -1;
  int bound_port = -1;
  bool ran = false;
  std::atomic<bool> stop_requested{false};
  std::atomic<bool> quit_watcher{false};
  std::atomic<bool> draining{false};

  std::mutex mu;
  std::condition_variable cv;
  bool listen_done = false, listen_ok = false, drain_timed_out = false;

  Impl(serve::Engine& e, HttpOptions o) : engine(e), opt(std::move(o)) {
    if (opt.workers < 1) throw InvalidInput("workers must be >= 1, got " + std::to_string(opt.workers));
    if (opt.max_body_bytes < 1) throw InvalidInput("max_body_bytes must be >= 1");
    if (opt.request_timeout_ms < 1)
      throw InvalidInput("request_timeout_ms must be >= 1, got " + std::to_string(opt.request_timeout_ms));
    configure();
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) throw IOError(std::string("pipe: ") + std::strerror(errno));
    pipe_rd = fds[0];
    pipe_wr = fds[1];
  }

  ~Impl() {
    if (drain_timed_out) (void)svr.release();  // a detached worker may still use it; the process is exiting
    if (!ran && listen_fd >= 0) ::close(listen_fd);
    if (pipe_rd >= 0) ::close(pipe_rd);
    if (pipe_wr >= 0) ::close(pipe_wr);
  }

  std::chrono::milliseconds timeout() const { return std::chrono::milliseconds(opt.request_timeout_ms); }

  // ---- plumbing ----
  void configure() {
    httplib::Server& s = *svr;
    const int workers = opt.workers;
    s.new_task_queue = [workers] { return new httplib::ThreadPool(static_cast<size_t>(workers)); };
    s.set_read_timeout(timeout());
    s.set_write_timeout(timeout());
    s.set_keep_alive_timeout(opt.keep_alive_timeout_s);
    s.set_keep_alive_max_count(std::max<size_t>(1, opt.keep_alive_max_requests));
    s.set_payload_max_length(opt.max_body_bytes);
    s.set_tcp_nodelay(true);
    // httplib's default also sets SO_REUSEPORT, which would let a second server bind the same
    // port silently; keep only SO_REUSEADDR (restart without waiting for TIME_WAIT).
    s.set_socket_options([this](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      listen_fd = sock;
    });

    s.set_pre_routing_handler([this](const httplib::Request&, httplib::Response&) {
      if (t_request.pending) metrics.dec_in_flight();  // the previous request was never logged
      t_request.pending = true;
      t_request.start = Clock::now();
      metrics.inc_in_flight();
      return httplib::Server::HandlerResponse::Unhandled;
    });
    s.set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
      if (draining.load() && res.get_header_value("Connection") != "close") {
        res.headers.erase("Keep-Alive");
        res.headers.erase("Connection");
        res.set_header("Connection", "close");
      }
    });
    s.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      double seconds = -1;
      if (t_request.pending) {
        seconds = std::chrono::duration<double>(Clock::now() - t_request.start).count();
        t_request.pending = false;
        metrics.dec_in_flight();
      }
      metrics.observe(route_of_path(req.path), res.status, seconds);
      if (log_level() <= LogLevel::Debug)
        GENREC_LOG_DEBUG("%s %s %d %.3f ms", req.method.c_str(), req.path.c_str(), res.status,
                         seconds >= 0 ? seconds * 1e3 : 0.0);
    });
    // Statuses httplib sets itself (404 no route, 413 body too large, 400 unreadable request,
    // 414 long URI) get the JSON error body; responses that already have a body keep it.
    s.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string msg;
      switch (res.status) {
        case 404: msg = "no route " + req.method + " " + req.path + " (see docs/serving.md)"; break;
        case 413:
          msg = "request body too large (limit " + std::to_string(opt.max_body_bytes) + " bytes, --max-body-bytes)";
          break;
        case 400: msg = "bad request: the request could not be read"; break;
        case 414: msg = "request URI too long"; break;
        default: msg = "HTTP status " + std::to_string(res.status); break;
      }
      res.set_content(error_body(res.status, msg), "application/json");
      return httplib::Server::HandlerResponse::Handled;
    }));
    s.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown exception";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      GENREC_LOG_ERROR("%s %s: %s", req.method.c_str(), req.path.c_str(), what.c_str());
      set_error(res, 500, "internal error: " + what);
    });

    post("/v1/recommend", false, [this](const json& b) { return recommend(b); });
    post("/v1/rank", false, [this](const json& b) { return rank(b); });
    post("/v1/events", true, [this](const json& b) { return events(b); });
    post("/v1/reload", true, [this](const json& b) { return reload(b); });
    get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(dump(engine.models()), "application/json");
    });
    get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
      const bool stopping = draining.load();
      res.status = stopping ? 503 : 200;
      res.set_content(dump(json{{"status", stopping ? "stopping" : "ok"},
                                {"uptime_seconds", std::chrono::duration<double>(Clock::now() - started).count()}}),
                      "application/json");
    });
    get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      json stats = json::object();
      try {
        stats = engine.stats();
      } catch (const std::exception& e) {
        GENREC_LOG_ERROR("engine.stats(): %s", e.what());
      }
      res.set_content(metrics.render(stats), "text/plain; version=0.0.4; charset=utf-8");
    });
  }

  // Every other method on a known path: 405 with Allow.
  void method_not_allowed(const std::string& path, const std::string& allow) {
    auto h = [allow](const httplib::Request& req, httplib::Response& res) {
      set_error(res, 405, "method " + req.method + " not allowed on " + req.path + " (allowed: " + allow + ")");
      res.set_header("Allow", allow);
    };
    httplib::Server& s = *svr;
    if (allow.find("GET") == std::string::npos) s.Get(path, h);
    if (allow.find("POST") == std::string::npos) s.Post(path, h);
    s.Put(path, h);
    s.Patch(path, h);
    s.Delete(path, h);
    s.Options(path, h);
  }

  void get(const std::string& path, httplib::Server::Handler handler) {
    svr->Get(path, [this, handler](const httplib::Request& req, httplib::Response& res) {
      guarded(req, res, [&] { handler(req, res); });
    });
    method_not_allowed(path, "GET, HEAD");
  }

  template <class F>
  void post(const std::string& path, bool write, F handle) {
    svr->Post(path, [this, write, handle](const httplib::Request& req, httplib::Response& res) {
      guarded(req, res, [&] {
        if (write) authorize(req, res);
        if (req.body.size() > opt.max_body_bytes)  // chunked bodies are not limited by httplib
          throw HttpError{413, "request body too large (limit " + std::to_string(opt.max_body_bytes) +
                                   " bytes, --max-body-bytes)"};
        json out = handle(parse_body(req));
        res.status = 200;
        res.set_content(dump(out), "application/json");
      });
    });
    method_not_allowed(path, "POST");
  }

  // Maps exceptions to error responses; never lets one escape into httplib.
  template <class F>
  void guarded(const httplib::Request& req, httplib::Response& res, F&& f) {
    try {
      f();
    } catch (const HttpError& e) {
      set_error(res, e.status, e.message);
      if (e.status == 401) res.set_header("WWW-Authenticate", "Bearer");
    } catch (const serve::DeadlineExceeded& e) {
      GENREC_LOG_WARN("%s %s: %s", req.method.c_str(), req.path.c_str(), e.what());
      set_error(res, 503, e.what());
    } catch (const InvalidInput& e) {
      set_error(res, 400, e.what());
    } catch (const std::exception& e) {
      GENREC_LOG_ERROR("%s %s: %s", req.method.c_str(), req.path.c_str(), e.what());
      set_error(res, 500, std::string("internal error: ") + e.what());
    } catch (...) {
      GENREC_LOG_ERROR("%s %s: unknown exception", req.method.c_str(), req.path.c_str());
      set_error(res, 500, "internal error");
    }
  }

  void authorize(const httplib::Request& req, httplib::Response&) const {
    if (opt.token.empty()) return;
    if (!req.has_header("Authorization"))
      throw HttpError{401, "missing Authorization header (write endpoints need \"Authorization: Bearer TOKEN\")"};
    std::string value = req.get_header_value("Authorization");
    std::string given;
    if (value.size() > 7 && lower(value.substr(0, 7)) == "bearer ") {
      given = value.substr(7);
      while (!given.empty() && given.front() == ' ') given.erase(given.begin());
      while (!given.empty() && (given.back() == ' ' || given.back() == '\t')) given.pop_back();
    }
    if (!constant_time_equal(given, opt.token)) throw HttpError{401, "invalid bearer token"};
  }

  Clock::time_point deadline() const {
    const Clock::time_point start = t_request.pending ? t_request.start : Clock::now();
    return start + timeout();
  }

  // ---- routes ----
  json recommend(const json& body) {
    Fields f(body, "", {"user_id", "history", "history_times", "k", "exclude_seen", "at", "ignore_unknown_items"});
    f.check_unknown();
    serve::RecommendQuery q;
    q.history = parse_history(f);
    q.k = f.integer("k", 1, kMaxK).value_or(10);
    q.exclude_seen = f.boolean("exclude_seen").value_or(true);
    q.at = f.integer("at", 0, kMaxTime, kSeconds).value_or(-1);
    q.ignore_unknown_items = f.boolean("ignore_unknown_items").value_or(false);
    q.deadline = deadline();
    serve::RecommendReply r = engine.recommend(q);

    json items = json::array();
    for (size_t i = 0; i < r.items.size(); ++i)
      items.push_back({{"item", r.items[i].item}, {"score", r.items[i].score}, {"rank", i + 1}});
    json out = {{"items", std::move(items)}, {"history_length", r.history_length}, {"fallback", r.fallback}};
    if (r.fallback) out["fallback_reason"] = r.fallback_reason;
    if (!r.ignored_items.empty()) out["ignored_items"] = r.ignored_items;
    out["model"] = r.model;
    out["cache_hit"] = r.cache_hit;
    out["batch_size"] = r.batch_size;
    return out;
  }

  json rank(const json& body) {
    Fields f(body, "", {"user_id", "history", "history_times", "candidates", "at", "ignore_unknown_items"});
    f.check_unknown();
    serve::RankQuery q;
    q.history = parse_history(f);
    if (!f.has("candidates")) bad_request("missing field 'candidates'");
    q.candidates = *f.id_array("candidates", 1, kMaxCandidates);
    q.at = f.integer("at", 0, kMaxTime, kSeconds).value_or(-1);
    q.ignore_unknown_items = f.boolean("ignore_unknown_items").value_or(false);
    q.deadline = deadline();
    serve::RankReply r = engine.rank(q);

    json cands = json::array();
    for (const serve::RankedCandidate& c : r.candidates) {
      json scores = json::object();
      for (const auto& [task, v] : c.scores) scores[task] = v;
      json cand = {{"item", c.item}, {"scores", std::move(scores)}};
      if (!c.feedback.empty()) cand["feedback"] = c.feedback;
      cands.push_back(std::move(cand));
    }
    json out = {{"candidates", std::move(cands)}, {"tasks", r.tasks}, {"model", r.model},
                {"m_falcon", r.m_falcon},        {"fallback", r.fallback}};
    if (r.fallback) out["fallback_reason"] = r.fallback_reason;
    if (!r.ignored_items.empty()) out["ignored_items"] = r.ignored_items;
    return out;
  }

  static serve::Event parse_event(const Fields& f) {
    serve::Event e;
    e.user = f.required_id("user_id");
    e.item = f.required_id("item_id");
    e.timestamp = f.integer("timestamp", 0, kMaxTime, kSeconds).value_or(-1);
    e.action = f.string("action").value_or("");
    return e;
  }

  json events(const json& body) {
    std::vector<serve::Event> events;
    bool ignore_unknown = false;
    if (body.is_object() && body.contains("events")) {
      Fields f(body, "", {"events", "ignore_unknown_items"});
      f.check_unknown();
      ignore_unknown = f.boolean("ignore_unknown_items").value_or(false);
      if (!f.has("events")) bad_request("field 'events' must be an array, got null");
      const json& arr = f.array("events", 1, std::numeric_limits<size_t>::max());
      events.reserve(arr.size());
      for (size_t i = 0; i < arr.size(); ++i) {
        Fields ef(arr[i], "events[" + std::to_string(i) + "].", {"user_id", "item_id", "timestamp", "action"});
        ef.check_unknown();
        events.push_back(parse_event(ef));
      }
    } else {
      Fields f(body, "", {"user_id", "item_id", "timestamp", "action", "ignore_unknown_items"});
      f.check_unknown();
      ignore_unknown = f.boolean("ignore_unknown_items").value_or(false);
      events.push_back(parse_event(f));
    }
    serve::EventsReply r = engine.add_events(events, ignore_unknown);  // returns once durable
    json out = {{"accepted", r.accepted}};
    if (!r.ignored_items.empty()) out["ignored_items"] = r.ignored_items;
    return out;
  }

  json reload(const json& body) {
    Fields f(body, "", {"run_dir"});
    f.check_unknown();
    auto run_dir = f.string("run_dir");
    if (!run_dir) bad_request("missing field 'run_dir'");
    if (run_dir->empty()) bad_request("field 'run_dir' must not be empty");
    GENREC_LOG_INFO("reloading retrieval run %s", run_dir->c_str());
    engine.reload(*run_dir);
    GENREC_LOG_INFO("reloaded %s", run_dir->c_str());
    return json{{"reloaded", *run_dir}, {"models", engine.models()}};
  }

  // ---- lifecycle ----
  void watch() {
    for (;;) {
      pollfd p{pipe_rd, POLLIN, 0};
      int rc = ::poll(&p, 1, -1);
      if (rc < 0 && errno != EINTR) {
        GENREC_LOG_ERROR("shutdown watcher: poll: %s", std::strerror(errno));
        return;
      }
      char buf[64];
      while (::read(pipe_rd, buf, sizeof buf) > 0) {
      }
      if (quit_watcher.load()) return;
      if (stop_requested.load()) break;
    }
    draining.store(true);
    GENREC_LOG_INFO("shutting down: no new connections; %lld request(s) in flight",
                    static_cast<long long>(metrics.in_flight()));
    // stop() is a no-op until listen has started: wait for it (or for it to have ended).
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (listen_done) break;
      }
      if (svr->is_running()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    // Closes the listening socket; httplib's accept loop then ends and joins its worker threads,
    // which finish the requests they are reading or handling (each bounded by the read/write
    // timeouts and the request deadline).
    svr->stop();
    const int64_t drain_ms =
        opt.drain_timeout_ms > 0 ? opt.drain_timeout_ms : opt.request_timeout_ms + 5000 + 1000 * opt.keep_alive_timeout_s;
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::milliseconds(drain_ms), [&] { return listen_done; })) {
      drain_timed_out = true;
      GENREC_LOG_ERROR("shutdown: %lld request(s) still in flight after %lld ms; giving up on them",
                       static_cast<long long>(metrics.in_flight()), static_cast<long long>(drain_ms));
      cv.notify_all();
    }
  }

  void wake_watcher() {
    const int saved = errno;
    char c = 1;
    ssize_t n = ::write(pipe_wr, &c, 1);
    (void)n;
    errno = saved;
  }
};

HttpServer::HttpServer(serve::Engine& engine, HttpOptions options)
    : impl_(std::make_unique<Impl>(engine, std::move(options))) {}

HttpServer::~HttpServer() = default;

void HttpServer::bind() {
  Impl& m = *impl_;
  if (m.bound_port >= 0) throw InternalError("HttpServer::bind called twice");
  errno = 0;
  int port = -1;
  if (m.opt.port < 0 || m.opt.port > 65535)
    throw InvalidInput("port must be in 0..65535, got " + std::to_string(m.opt.port));
  if (m.opt.port == 0) {
    port = m.svr->bind_to_any_port(m.opt.host);
  } else if (m.svr->bind_to_port(m.opt.host, m.opt.port)) {
    port = m.opt.port;
  }
  const int err = errno;
  if (port <= 0) {
    std::string why = err ? std::strerror(err) : "cannot resolve or bind the address";
    throw IOError("cannot listen on " + m.opt.host + ":" + std::to_string(m.opt.port) + ": " + why);
  }
  // httplib listens with a backlog of 5; raise it so bursts of new connections are not dropped.
  if (m.listen_fd >= 0) ::listen(m.listen_fd, SOMAXCONN);
  m.bound_port = port;
}

int HttpServer::port() const { return impl_->bound_port; }

bool HttpServer::run() {
  Impl& m = *impl_;
  if (m.bound_port < 0) throw InternalError("HttpServer::run called before bind()");
  if (m.ran) throw InternalError("HttpServer::run called twice");
  m.ran = true;
  std::thread watcher([&m] { m.watch(); });
  std::thread listener([&m] {
    bool ok = false;
    try {
      ok = m.svr->listen_after_bind();
    } catch (const std::exception& e) {
      GENREC_LOG_ERROR("accept loop: %s", e.what());
    }
    std::lock_guard<std::mutex> lock(m.mu);
    m.listen_ok = ok;
    m.listen_done = true;
    m.cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(m.mu);
    m.cv.wait(lock, [&] { return m.listen_done || m.drain_timed_out; });
    if (!m.listen_done) {
      lock.unlock();
      watcher.join();
      listener.detach();  // still joining workers that hold requests; the caller exits the process
      return false;
    }
  }
  listener.join();
  m.quit_watcher.store(true);
  m.wake_watcher();
  watcher.join();
  if (!m.listen_ok && !m.stop_requested.load()) throw IOError("accepting connections failed; server stopped");
  GENREC_LOG_INFO("stopped after %llu request(s)", static_cast<unsigned long long>(m.metrics.requests_total()));
  return true;
}

void HttpServer::request_stop() {
  impl_->stop_requested.store(true);
  impl_->wake_watcher();
}

bool HttpServer::stopping() const { return impl_->stop_requested.load(); }

}  // namespace genrec::server
