// End-to-end tests of `genrec serve` (apps/server): the built binary on loopback, driven by a
// small raw-socket HTTP/1.1 client (one request per connection). A tiny dataset, an HSTU run and
// a pop run are prepared once per suite.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_util.h"

extern char** environ;

namespace genrec::test {
namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// A minimal HTTP client: connect, send one request with "Connection: close", read to EOF.

struct HttpReply {
  int status = -1;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  json json_body() const {
    json j = json::parse(body, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << body;
    return j;
  }
  std::string error_message() const {
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.contains("error")) return "<no error body: " + body + ">";
    return j["error"].value("message", "");
  }
};

int connect_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{60, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string request_head(const std::string& method, const std::string& path, size_t body_size,
                          const std::vector<std::string>& headers) {
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  bool has_type = false;
  for (const auto& h : headers) {
    req += h + "\r\n";
    if (h.rfind("Content-Type", 0) == 0) has_type = true;
  }
  if (method != "GET" || body_size > 0) {
    if (!has_type) req += "Content-Type: application/json\r\n";
    req += "Content-Length: " + std::to_string(body_size) + "\r\n";
  }
  return req + "\r\n";
}

HttpReply read_reply(int fd) {
  std::string raw;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  HttpReply r;
  const size_t end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.1 ", 0) != 0 || end == std::string::npos) {
    r.body = raw;
    return r;
  }
  r.status = std::stoi(raw.substr(9, 3));
  std::istringstream head(raw.substr(0, end));
  std::string line;
  std::getline(head, line);
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon), value = line.substr(colon + 1);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    while (!value.empty() && value.front() == ' ') value.erase(value.begin());
    r.headers[name] = value;
  }
  r.body = raw.substr(end + 4);
  return r;
}

HttpReply http(int port, const std::string& method, const std::string& path, const std::string& body = "",
               const std::vector<std::string>& headers = {}) {
  int fd = connect_loopback(port);
  if (fd < 0) return HttpReply{};
  send_all(fd, request_head(method, path, body.size(), headers) + body);
  HttpReply r = read_reply(fd);
  ::close(fd);
  return r;
}

HttpReply post(int port, const std::string& path, const json& body, const std::vector<std::string>& headers = {}) {
  return http(port, "POST", path, body.dump(), headers);
}

// ---------------------------------------------------------------------------------------------
// `genrec serve` as a child process: stdout piped (the JSON line), stderr to a file.

class ServerProcess {
 public:
  ServerProcess(const std::vector<std::string>& args, const std::vector<std::string>& extra_env, const fs::path& log)
      : log_(log) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
    std::vector<std::string> argv_s = {GENREC_CLI_PATH};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_s;
    for (char** e = environ; *e; ++e) env_s.emplace_back(*e);
    env_s.push_back("OMP_NUM_THREADS=1");
    for (const auto& e : extra_env) env_s.push_back(e);
    std::vector<char*> envp;
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int rc = ::posix_spawn(&pid_, GENREC_CLI_PATH, &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    out_fd_ = fds[0];
    if (rc != 0) {
      pid_ = -1;
      throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(rc));
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
    }
    if (out_fd_ >= 0) ::close(out_fd_);
  }

  // Reads the first stdout line (the "listening" JSON); empty when the process exits first.
  std::string read_line(int timeout_ms = 120000) {
    std::string line;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < until) {
      pollfd p{out_fd_, POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      char c;
      ssize_t n = ::read(out_fd_, &c, 1);
      if (n <= 0) break;
      if (c == '\n') return line;
      line += c;
    }
    return line;
  }

  // Sends `sig` and waits; returns the exit code, or 128 + signal number.
  int stop(int sig = SIGTERM, int timeout_ms = 60000) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    return wait(timeout_ms);
  }
  int wait(int timeout_ms = 60000) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    int st = 0;
    for (;;) {
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) break;
      if (std::chrono::steady_clock::now() > until) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
        pid_ = -1;
        return -2;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  pid_t pid() const { return pid_; }
  std::string log() const { return read_text(log_); }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  fs::path log_;
};

// A started server: the process plus its port.
struct Served {
  std::unique_ptr<ServerProcess> proc;
  int port = -1;
  json ready;
};

// ---------------------------------------------------------------------------------------------

class Server : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new TempDir();
    const fs::path data = *tmp_ / "data";
    CliResult g = run_cli("-q data generate --out '" + data.string() + "' --users 200 --items 100 --seed 3");
    ASSERT_EQ(g.exit_code, 0) << g.err;
    write_text(*tmp_ / "hstu.toml", R"([data]
split = "leave_one_out"
[model]
type = "hstu"
d_model = 16
max_len = 20
n_blocks = 1
n_heads = 1
dropout = 0.0
[train]
epochs = 2
batch_size = 64
lr = 0.005
eval_every = 2
patience = 1
seed = 1
threads = 1
[eval]
ks = [10]
)");
    write_text(*tmp_ / "pop.toml", "[data]\nsplit = \"leave_one_out\"\n[model]\ntype = \"pop\"\n[eval]\nks = [10]\n");
    CliResult t = run_cli("-q train --config '" + (*tmp_ / "hstu.toml").string() + "' --data '" + data.string() +
                          "' --out '" + (*tmp_ / "hstu").string() + "'");
    ASSERT_EQ(t.exit_code, 0) << t.err;
    CliResult p = run_cli("-q train --config '" + (*tmp_ / "pop.toml").string() + "' --data '" + data.string() +
                          "' --out '" + (*tmp_ / "pop").string() + "'");
    ASSERT_EQ(p.exit_code, 0) << p.err;
    write_text(*tmp_ / "genrank.toml", R"([data]
split = "temporal"
[model]
type = "genrank"
tasks = ["like", "rating"]
d_model = 16
max_len = 20
n_blocks = 1
n_heads = 1
dropout = 0.0
[train]
epochs = 1
batch_size = 64
lr = 0.003
eval_every = 1
patience = 1
seed = 1
threads = 1
)");
    CliResult r = run_cli("-q train --config '" + (*tmp_ / "genrank.toml").string() + "' --data '" + data.string() +
                          "' --out '" + (*tmp_ / "genrank").string() + "'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    shared_ = new Served(start({}, {}, "shared"));
  }
  static void TearDownTestSuite() {
    if (shared_) {
      if (shared_->proc) shared_->proc->stop(SIGTERM);
      delete shared_;
      shared_ = nullptr;
    }
    delete tmp_;
    tmp_ = nullptr;
  }
  void SetUp() override {
    if (!shared_ || shared_->port <= 0) GTEST_SKIP() << "suite setup failed";
  }

  static fs::path run_dir() { return *tmp_ / "hstu"; }
  static fs::path pop_dir() { return *tmp_ / "pop"; }
  static fs::path rank_dir() { return *tmp_ / "genrank"; }
  static int port() { return shared_->port; }

  // Starts `genrec serve` on the HSTU run with its own state dir (named `name`) and any free port.
  static Served start(std::vector<std::string> extra, const std::vector<std::string>& env, const std::string& name,
                      const std::optional<fs::path>& state = std::nullopt) {
    std::vector<std::string> args = {"serve",     "--run", run_dir().string(), "--port", "0", "--state",
                                     (state ? *state : *tmp_ / ("state-" + name)).string(),
                                     "--threads", "1",     "--workers",          "4"};
    if (std::find(extra.begin(), extra.end(), "--timeout-ms") == extra.end()) extra.insert(extra.end(), {"--timeout-ms", "20000"});
    args.insert(args.end(), extra.begin(), extra.end());
    Served s;
    s.proc = std::make_unique<ServerProcess>(args, env, *tmp_ / ("serve-" + name + ".log"));
    const std::string line = s.proc->read_line();
    s.ready = json::parse(line, nullptr, false);
    EXPECT_FALSE(s.ready.is_discarded()) << "no JSON line from genrec serve: '" << line << "'\n" << s.proc->log();
    if (!s.ready.is_discarded() && s.ready.contains("port")) s.port = s.ready["port"].get<int>();
    return s;
  }

  static TempDir* tmp_;
  static Served* shared_;
};

TempDir* Server::tmp_ = nullptr;
Served* Server::shared_ = nullptr;

std::vector<std::string> item_ids(const json& items) {
  std::vector<std::string> out;
  for (const auto& it : items) out.push_back(it["item"].get<std::string>());
  return out;
}

// ---------------------------------------------------------------------------------------------

TEST_F(Server, ReadyLineNamesThePort) {
  const json& r = shared_->ready;
  EXPECT_EQ(r["listening"], "http://127.0.0.1:" + std::to_string(port()));
  EXPECT_GT(port(), 0);
  EXPECT_EQ(r["auth"], false);
}

TEST_F(Server, HealthzAndModels) {
  HttpReply h = http(port(), "GET", "/healthz");
  ASSERT_EQ(h.status, 200) << h.body;
  EXPECT_EQ(h.json_body()["status"], "ok");
  EXPECT_EQ(h.headers["content-type"], "application/json");

  HttpReply m = http(port(), "GET", "/v1/models");
  ASSERT_EQ(m.status, 200) << m.body;
  json j = m.json_body();
  EXPECT_EQ(j["retrieval"]["type"], "hstu");
  EXPECT_EQ(j["retrieval"]["n_items"], 100);
  EXPECT_TRUE(j["ranking"].is_null());
}

TEST_F(Server, RecommendKnownUser) {
  HttpReply r = post(port(), "/v1/recommend", {{"user_id", "7"}, {"k", 5}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.json_body();
  ASSERT_EQ(j["items"].size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(j["items"][i]["rank"], i + 1);
    EXPECT_TRUE(j["items"][i]["item"].is_string());
    EXPECT_TRUE(j["items"][i]["score"].is_number());
    if (i > 0) {
      EXPECT_GE(j["items"][i - 1]["score"].get<double>(), j["items"][i]["score"].get<double>());
    }
  }
  EXPECT_GT(j["history_length"].get<int64_t>(), 0);
  EXPECT_EQ(j["fallback"], false);
  EXPECT_FALSE(j.contains("fallback_reason"));
  EXPECT_EQ(j["model"], "hstu");
  EXPECT_TRUE(j["cache_hit"].is_boolean());
  EXPECT_GE(j["batch_size"].get<int64_t>(), 1);

  // Numeric ids are accepted as integers too; the same user gives the same answer (from the cache).
  HttpReply again = post(port(), "/v1/recommend", {{"user_id", 7}, {"k", 5}});
  ASSERT_EQ(again.status, 200) << again.body;
  json j2 = again.json_body();
  EXPECT_EQ(item_ids(j2["items"]), item_ids(j["items"]));
  if (http(port(), "GET", "/v1/models").json_body()["retrieval"].value("kv_cache", false)) {
    EXPECT_EQ(j2["cache_hit"], true);
  }

  // Default k = 10; exclude_seen = false may return history items.
  HttpReply d = post(port(), "/v1/recommend", {{"user_id", "7"}, {"exclude_seen", false}});
  ASSERT_EQ(d.status, 200) << d.body;
  EXPECT_EQ(d.json_body()["items"].size(), 10u);
}

TEST_F(Server, RecommendUnknownUserFallsBack) {
  HttpReply r = post(port(), "/v1/recommend", {{"user_id", "nobody-ever"}, {"k", 3}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.json_body();
  EXPECT_EQ(j["fallback"], true);
  EXPECT_EQ(j["fallback_reason"], "unknown_user");
  EXPECT_EQ(j["history_length"], 0);
  EXPECT_EQ(j["items"].size(), 3u);

  HttpReply e = post(port(), "/v1/recommend", {{"history", json::array()}, {"k", 3}});
  ASSERT_EQ(e.status, 200) << e.body;
  EXPECT_EQ(e.json_body()["fallback"], true);
  EXPECT_EQ(e.json_body()["fallback_reason"], "empty_history");
}

TEST_F(Server, RecommendAdHocHistory) {
  const json hist = {"3", "14", "15", "92"};
  HttpReply r = post(port(), "/v1/recommend", {{"history", hist}, {"k", 20}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.json_body();
  EXPECT_EQ(j["history_length"], 4);
  EXPECT_EQ(j["fallback"], false);
  ASSERT_EQ(j["items"].size(), 20u);
  for (const auto& it : j["items"])
    for (const auto& h : hist) EXPECT_NE(it["item"], h) << "seen item recommended with exclude_seen";

  // With times; unknown ids dropped on request and listed.
  HttpReply t = post(port(), "/v1/recommend",
                     {{"history", {"3", "no-such-item", "15"}},
                      {"history_times", {1700000000, 1700000100, 1700000200}},
                      {"ignore_unknown_items", true},
                      {"at", 1700000300}});
  ASSERT_EQ(t.status, 200) << t.body;
  EXPECT_EQ(t.json_body()["ignored_items"], json::array({"no-such-item"}));
  EXPECT_EQ(t.json_body()["history_length"], 2);
}

TEST_F(Server, RankScoresCandidatesInRequestOrder) {
  HttpReply r = post(port(), "/v1/rank", {{"user_id", "7"}, {"candidates", {"5", "1", "77"}}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.json_body();
  ASSERT_EQ(j["candidates"].size(), 3u);
  EXPECT_EQ(j["candidates"][0]["item"], "5");
  EXPECT_EQ(j["candidates"][1]["item"], "1");
  EXPECT_EQ(j["candidates"][2]["item"], "77");
  ASSERT_TRUE(j["tasks"].is_array());
  ASSERT_FALSE(j["tasks"].empty());
  for (const auto& c : j["candidates"])
    for (const auto& t : j["tasks"]) EXPECT_TRUE(c["scores"][t.get<std::string>()].is_number()) << c.dump();
  EXPECT_TRUE(j["m_falcon"].is_boolean());
  EXPECT_EQ(j["model"], "hstu");
  EXPECT_EQ(j["fallback"], false);

  // Rank scores agree with recommend scores of the same history (retrieval run, no ranker).
  HttpReply rec = post(port(), "/v1/recommend", {{"user_id", "7"}, {"k", 100}, {"exclude_seen", false}});
  ASSERT_EQ(rec.status, 200);
  bool compared = false;
  const json rec_items = rec.json_body()["items"];
  for (const auto& it : rec_items) {
    if (it["item"] == "77" && j["tasks"].size() == 1 && j["tasks"][0] == "score") {
      EXPECT_NEAR(it["score"].get<double>(), j["candidates"][2]["scores"]["score"].get<double>(), 1e-4);
      compared = true;
    }
  }
  EXPECT_TRUE(compared) << rec.body;

  HttpReply bad = post(port(), "/v1/rank", {{"user_id", "7"}, {"candidates", {"5", "not-an-item"}}});
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.error_message().find("not-an-item"), std::string::npos) << bad.body;
  HttpReply none = post(port(), "/v1/rank", {{"user_id", "7"}});
  EXPECT_EQ(none.status, 400);
  EXPECT_NE(none.error_message().find("candidates"), std::string::npos) << none.body;
}

TEST_F(Server, RankWithARankingRunUsesMFalconAndMatchesTheCli) {
  Served s = start({"--rank-run", rank_dir().string()}, {}, "ranking");
  ASSERT_GT(s.port, 0);
  json models = http(s.port, "GET", "/v1/models").json_body();
  EXPECT_EQ(models["ranking"]["type"], "genrank") << models.dump();
  HttpReply r = post(s.port, "/v1/rank", {{"user_id", "7"}, {"candidates", {"5", "1", "77"}}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.json_body();
  EXPECT_EQ(j["model"], "genrank");
  EXPECT_EQ(j["m_falcon"], true);
  EXPECT_EQ(j["tasks"], json::parse(R"(["like", "rating"])"));
  ASSERT_EQ(j["candidates"].size(), 3u);
  for (const auto& c : j["candidates"]) {
    const double like = c["scores"]["like"].get<double>();
    EXPECT_GE(like, 0.0);
    EXPECT_LE(like, 1.0);
    EXPECT_TRUE(c["scores"]["rating"].is_number());
    EXPECT_FALSE(c.contains("feedback")) << r.body;  // one head per task: no feedback distribution
  }
  CliResult cli = run_cli("-q rank --run '" + rank_dir().string() + "' --user 7 --candidates 5,1,77");
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  json c = json::parse(cli.out);
  ASSERT_EQ(c["candidates"].size(), 3u) << cli.out;
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(j["candidates"][i]["item"], c["candidates"][i]["item"]);
    for (const char* task : {"like", "rating"}) {
      const double a = j["candidates"][i]["scores"][task].get<double>(), b = c["candidates"][i]["scores"][task].get<double>();
      EXPECT_NEAR(a, b, 1e-4 * std::max(1.0, std::fabs(b))) << "candidate " << i << " task " << task;
    }
  }
  EXPECT_EQ(s.proc->stop(SIGTERM), 0) << s.proc->log();
}

// model.output = "feedback": /v1/rank also returns each candidate's predicted distribution over
// the rating levels; the task scores are read off it (like = P(level >= 4), rating = the expected
// level), and server and CLI agree.
TEST_F(Server, RankWithAFeedbackOutputRunReturnsTheDistribution) {
  std::string config = read_text(*tmp_ / "genrank.toml");
  config.replace(config.find("[model]\n"), 8, "[model]\noutput = \"feedback\"\n");
  write_text(*tmp_ / "genrank-fb.toml", config);
  const fs::path run = *tmp_ / "genrank-fb";
  CliResult t = run_cli("-q train --config '" + (*tmp_ / "genrank-fb.toml").string() + "' --data '" +
                        (*tmp_ / "data").string() + "' --out '" + run.string() + "'");
  ASSERT_EQ(t.exit_code, 0) << t.err;
  Served s = start({"--rank-run", run.string()}, {}, "ranking-feedback");
  ASSERT_GT(s.port, 0);
  HttpReply r = post(s.port, "/v1/rank", {{"user_id", "7"}, {"candidates", {"5", "1", "77"}}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.json_body();
  ASSERT_EQ(j["candidates"].size(), 3u) << r.body;
  CliResult cli = run_cli("-q rank --run '" + run.string() + "' --user 7 --candidates 5,1,77");
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  json c = json::parse(cli.out);
  ASSERT_EQ(c["candidates"].size(), 3u) << cli.out;
  for (size_t i = 0; i < 3; ++i) {
    const json& fb = j["candidates"][i]["feedback"];
    ASSERT_TRUE(fb.is_object() && fb.size() >= 2) << r.body;
    double total = 0, like = 0, mean = 0;
    for (const auto& [level, p] : fb.items()) {
      const double v = std::stod(level), q = p.get<double>();
      total += q;
      mean += v * q;
      if (v >= 4) like += q;
      EXPECT_NEAR(q, c["candidates"][i]["feedback"][level].get<double>(), 1e-5) << "candidate " << i << " level " << level;
    }
    EXPECT_NEAR(total, 1.0, 1e-5) << r.body;
    EXPECT_NEAR(j["candidates"][i]["scores"]["like"].get<double>(), like, 1e-5) << r.body;
    EXPECT_NEAR(j["candidates"][i]["scores"]["rating"].get<double>(), mean, 1e-4) << r.body;
  }
  EXPECT_EQ(s.proc->stop(SIGTERM), 0) << s.proc->log();
}

TEST_F(Server, BadRequestsGet4xxAndTheServerKeepsServing) {
  struct Case {
    std::string path, body;
    int status;
    std::string needle;  // must appear in the error message
  };
  const std::vector<Case> cases = {
      {"/v1/recommend", "{\"user_id\": \"7\"", 400, "malformed JSON"},
      {"/v1/recommend", "", 400, "empty"},
      {"/v1/recommend", "[1, 2]", 400, "JSON object"},
      {"/v1/recommend", R"({"user_id": "7", "k": "10"})", 400, "'k'"},
      {"/v1/recommend", R"({"user_id": "7", "k": 2.5})", 400, "'k'"},
      {"/v1/recommend", R"({"user_id": "7", "k": 0})", 400, "'k'"},
      {"/v1/recommend", R"({"user_id": "7", "k": 1001})", 400, "'k'"},
      {"/v1/recommend", R"({"user_id": "7", "exclude_seen": "yes"})", 400, "'exclude_seen'"},
      {"/v1/recommend", R"({"user_id": true})", 400, "'user_id'"},
      {"/v1/recommend", R"({"user_id": ""})", 400, "'user_id'"},
      {"/v1/recommend", R"({"history": "3,4"})", 400, "'history'"},
      {"/v1/recommend", R"({"history": ["3", false]})", 400, "'history[1]'"},
      {"/v1/recommend", R"({"history": ["3"], "history_times": [1, 2]})", 400, "'history_times'"},
      {"/v1/recommend", R"({"history": ["3"], "history_times": ["x"]})", 400, "'history_times[0]'"},
      {"/v1/recommend", R"({"history": ["3"], "at": -5})", 400, "'at'"},
      {"/v1/recommend", R"({"user_id": "7", "history": ["3"]})", 400, "not both"},
      {"/v1/recommend", R"({"k": 3})", 400, "user_id"},
      {"/v1/recommend", R"({"user_id": "7", "kk": 3, "colour": 1})", 400, "'colour', 'kk'"},
      {"/v1/recommend", R"({"history": ["3", "no-such-item-x"]})", 400, "no-such-item-x"},
      {"/v1/events", R"({"user_id": "u", "item_id": "no-such-item-y"})", 400, "no-such-item-y"},
      {"/v1/events", R"({"user_id": "u"})", 400, "item_id"},
      {"/v1/events", R"({"user_id": "u", "item_id": "3", "timestamp": "now"})", 400, "'timestamp'"},
      {"/v1/events", R"({"events": []})", 400, "events"},
      {"/v1/events", R"({"user_id": "u", "item_id": "3", "timestamp": 1700000000000})", 400, "Unix seconds"},
      {"/v1/events", R"({"events": [{"user_id": "u", "item_id": "3"}, {"user_id": "u"}]})", 400, "events[1].item_id"},
      {"/v1/events", R"({"events": [{"user_id": "u", "item_id": "3", "extra": 1}]})", 400, "events[0].extra"},
      {"/v1/events", R"({"events": {"user_id": "u"}})", 400, "'events'"},
      {"/v1/reload", R"({})", 400, "run_dir"},
      {"/v1/reload", R"({"run_dir": 5})", 400, "'run_dir'"},
  };
  for (const Case& c : cases) {
    HttpReply r = http(port(), "POST", c.path, c.body);
    EXPECT_EQ(r.status, c.status) << c.path << " " << c.body << " -> " << r.body;
    json j = json::parse(r.body, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r.body;
    EXPECT_EQ(j["error"]["code"], c.status) << r.body;
    EXPECT_NE(j["error"]["message"].get<std::string>().find(c.needle), std::string::npos)
        << c.body << " -> " << r.body << " (expected to mention " << c.needle << ")";
    EXPECT_EQ(r.headers["content-type"], "application/json");
  }

  // Nothing of the rejected event batches was stored.
  HttpReply u = post(port(), "/v1/recommend", {{"user_id", "u"}});
  ASSERT_EQ(u.status, 200);
  EXPECT_EQ(u.json_body()["fallback"], true) << u.body;

  // A body that parses is fine whatever its content type.
  HttpReply text = http(port(), "POST", "/v1/recommend", R"({"user_id": "7", "k": 2})", {"Content-Type: text/plain"});
  EXPECT_EQ(text.status, 200) << text.body;

  // Oversize body: 413 (the limit is 1 MiB by default).
  std::string big = R"({"history": [)";
  while (big.size() < (1u << 20) + 100) big += "\"1\",";
  big += "\"1\"]}";
  HttpReply large = http(port(), "POST", "/v1/recommend", big);
  EXPECT_EQ(large.status, 413) << large.body.substr(0, 200);
  EXPECT_NE(large.error_message().find("too large"), std::string::npos) << large.body;

  // Unknown route: 404; wrong method: 405 with Allow.
  HttpReply nf = http(port(), "GET", "/v2/nothing");
  EXPECT_EQ(nf.status, 404);
  EXPECT_EQ(json::parse(nf.body)["error"]["code"], 404);
  HttpReply nf2 = http(port(), "POST", "/v1/recommendations", "{}");
  EXPECT_EQ(nf2.status, 404);
  HttpReply wm = http(port(), "GET", "/v1/recommend");
  EXPECT_EQ(wm.status, 405) << wm.body;
  EXPECT_EQ(wm.headers["allow"], "POST");
  EXPECT_EQ(json::parse(wm.body)["error"]["code"], 405);
  HttpReply wm2 = http(port(), "POST", "/v1/models", "{}");
  EXPECT_EQ(wm2.status, 405);
  HttpReply wm3 = http(port(), "DELETE", "/v1/events");
  EXPECT_EQ(wm3.status, 405);

  // Still serving.
  EXPECT_EQ(http(port(), "GET", "/healthz").status, 200);
  EXPECT_EQ(post(port(), "/v1/recommend", {{"user_id", "7"}}).status, 200);
}

TEST_F(Server, EventsAreAcceptedAndChangeTheHistory) {
  HttpReply one = post(port(), "/v1/events", {{"user_id", "fresh-1"}, {"item_id", "12"}, {"timestamp", 1700000000},
                                              {"action", "click"}});
  ASSERT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(one.json_body()["accepted"], 1);
  HttpReply batch = post(port(), "/v1/events",
                         {{"events",
                           {{{"user_id", "fresh-1"}, {"item_id", "13"}, {"timestamp", 1700000100}},
                            {{"user_id", "fresh-1"}, {"item_id", 14}},
                            {{"user_id", "fresh-1"}, {"item_id", "not-an-item"}}}},
                          {"ignore_unknown_items", true}});
  ASSERT_EQ(batch.status, 200) << batch.body;
  EXPECT_EQ(batch.json_body()["accepted"], 2);
  EXPECT_EQ(batch.json_body()["ignored_items"], json::array({"not-an-item"}));

  HttpReply r = post(port(), "/v1/recommend", {{"user_id", "fresh-1"}, {"k", 100}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.json_body();
  EXPECT_EQ(j["history_length"], 3);
  EXPECT_EQ(j["fallback"], false);
  for (const auto& it : j["items"]) {
    EXPECT_NE(it["item"], "12");
    EXPECT_NE(it["item"], "13");
    EXPECT_NE(it["item"], "14");
  }
  EXPECT_EQ(j["items"].size(), 97u);

  // A dataset user's history grows by the posted events.
  const int64_t before = post(port(), "/v1/recommend", {{"user_id", "9"}}).json_body()["history_length"];
  ASSERT_EQ(post(port(), "/v1/events", {{"user_id", "9"}, {"item_id", "1"}}).status, 200);
  EXPECT_EQ(post(port(), "/v1/recommend", {{"user_id", "9"}}).json_body()["history_length"], before + 1);
}

TEST_F(Server, RecommendAfterEventsEqualsCliRecommend) {
  const std::vector<std::pair<std::string, int64_t>> events = {
      {"17", 1700000000}, {"4", 1700003600}, {"56", 1700007200}, {"23", 1700010800}, {"4", 1700014400}};
  json batch = json::array();
  std::string history;
  for (const auto& [item, t] : events) {
    batch.push_back({{"user_id", "cli-compare"}, {"item_id", item}, {"timestamp", t}});
    history += (history.empty() ? "" : ",") + item + "@" + std::to_string(t);
  }
  ASSERT_EQ(post(port(), "/v1/events", {{"events", batch}}).status, 200);

  auto compare = [&](const json& request, const std::string& cli_extra) {
    HttpReply r = post(port(), "/v1/recommend", request);
    ASSERT_EQ(r.status, 200) << r.body;
    json served = r.json_body();
    EXPECT_EQ(served["history_length"], events.size());
    CliResult c = run_cli("-q recommend --run '" + run_dir().string() + "' --history " + history +
                          " --k 10 --exclude-seen" + cli_extra);
    ASSERT_EQ(c.exit_code, 0) << c.err;
    json cli = json::parse(c.out);
    ASSERT_EQ(item_ids(served["items"]), item_ids(cli["items"])) << served.dump() << "\n" << cli.dump();
    for (size_t i = 0; i < cli["items"].size(); ++i) {
      const double a = served["items"][i]["score"].get<double>(), b = cli["items"][i]["score"].get<double>();
      EXPECT_NEAR(a, b, 1e-4 * std::max(1.0, std::fabs(b))) << "rank " << i + 1;
    }
  };
  compare({{"user_id", "cli-compare"}, {"k", 10}}, "");
  compare({{"user_id", "cli-compare"}, {"k", 10}, {"at", 1700020000}}, " --at 1700020000");
  // The same history given ad hoc.
  json hist = json::array(), times = json::array();
  for (const auto& [item, t] : events) {
    hist.push_back(item);
    times.push_back(t);
  }
  compare({{"history", hist}, {"history_times", times}, {"k", 10}}, "");
}

TEST_F(Server, ConcurrentRequestsGetTheSameAnswersAsSequentialOnes) {
  const std::vector<std::string> users = {"1", "2", "3", "4", "5", "6", "7", "8"};
  std::map<std::string, std::vector<std::string>> expected;
  for (const auto& u : users) {
    HttpReply r = post(port(), "/v1/recommend", {{"user_id", u}, {"k", 10}});
    ASSERT_EQ(r.status, 200) << r.body;
    expected[u] = item_ids(r.json_body()["items"]);
  }
  std::atomic<int> failures{0}, mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 6; ++i) {
        const std::string& u = users[static_cast<size_t>((t + i) % users.size())];
        HttpReply r = post(port(), "/v1/recommend", {{"user_id", u}, {"k", 10}});
        if (r.status != 200) {
          ++failures;
          continue;
        }
        if (item_ids(json::parse(r.body)["items"]) != expected[u]) ++mismatches;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(Server, MetricsInPrometheusFormat) {
  post(port(), "/v1/recommend", {{"user_id", "7"}});
  http(port(), "POST", "/v1/recommend", "{bad json");
  http(port(), "GET", "/nowhere");
  HttpReply m = http(port(), "GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.headers["content-type"].rfind("text/plain", 0), 0u) << m.headers["content-type"];
  const std::string& t = m.body;
  for (const char* needle : {
           "# TYPE genrec_http_requests_total counter",
           "genrec_http_requests_total{route=\"recommend\",code=\"200\"}",
           "genrec_http_requests_total{route=\"recommend\",code=\"400\"}",
           "genrec_http_requests_total{route=\"other\",code=\"404\"}",
           "genrec_http_errors_total{route=\"recommend\",type=\"bad_request\"}",
           "# TYPE genrec_http_request_duration_seconds histogram",
           "genrec_http_request_duration_seconds_bucket{route=\"recommend\",le=\"0.0005\"}",
           "genrec_http_request_duration_seconds_bucket{route=\"recommend\",le=\"5\"}",
           "genrec_http_request_duration_seconds_bucket{route=\"recommend\",le=\"+Inf\"}",
           "genrec_http_request_duration_seconds_count{route=\"recommend\"}",
           "genrec_http_request_duration_seconds_sum{route=\"recommend\"}",
           "# TYPE genrec_http_requests_in_flight gauge",
           "genrec_http_requests_in_flight 1",  // this very request
           "genrec_engine_cache_hits_total",
           "genrec_engine_cache_misses_total",
           "genrec_engine_cache_hit_ratio",
           "genrec_engine_batches_total",
           "genrec_engine_batched_requests_total",
           "genrec_engine_events_stored",
           "genrec_engine_users_stored",
           "genrec_engine_reloads_total",
       })
    EXPECT_NE(t.find(needle), std::string::npos) << "missing: " << needle;
  // Every sample line is "name{labels} value" or "name value" with a number.
  std::istringstream in(t);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    const std::string v = line.substr(sp + 1);
    char* end = nullptr;
    std::strtod(v.c_str(), &end);
    EXPECT_TRUE(*end == '\0' || v == "+Inf" || v == "NaN") << line;
  }
}

TEST_F(Server, WriteEndpointsNeedTheToken) {
  write_text(*tmp_ / "token", "s3cret-token\n");
  Served s = start({"--token-file", (*tmp_ / "token").string()}, {}, "auth");
  ASSERT_GT(s.port, 0);
  EXPECT_EQ(s.ready["auth"], true);
  const json ev = {{"user_id", "a1"}, {"item_id", "3"}};
  HttpReply none = post(s.port, "/v1/events", ev);
  EXPECT_EQ(none.status, 401) << none.body;
  EXPECT_EQ(none.headers["www-authenticate"], "Bearer");
  EXPECT_EQ(json::parse(none.body)["error"]["code"], 401);
  EXPECT_EQ(post(s.port, "/v1/events", ev, {"Authorization: Bearer wrong"}).status, 401);
  EXPECT_EQ(post(s.port, "/v1/events", ev, {"Authorization: Bearer s3cret-token-and-more"}).status, 401);
  EXPECT_EQ(post(s.port, "/v1/events", ev, {"Authorization: Basic s3cret-token"}).status, 401);
  EXPECT_EQ(post(s.port, "/v1/reload", {{"run_dir", run_dir().string()}}).status, 401);
  HttpReply ok = post(s.port, "/v1/events", ev, {"Authorization: Bearer s3cret-token"});
  EXPECT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.json_body()["accepted"], 1);
  // Reads stay open.
  EXPECT_EQ(post(s.port, "/v1/recommend", {{"user_id", "a1"}}).status, 200);
  EXPECT_EQ(http(s.port, "GET", "/v1/models").status, 200);
  EXPECT_EQ(s.proc->stop(SIGINT), 0) << s.proc->log();

  // The token may come from the environment instead.
  Served e = start({}, {"GENREC_SERVE_TOKEN=env-token"}, "auth-env");
  ASSERT_GT(e.port, 0);
  EXPECT_EQ(post(e.port, "/v1/events", ev).status, 401);
  EXPECT_EQ(post(e.port, "/v1/events", ev, {"Authorization: Bearer env-token"}).status, 200);
  EXPECT_EQ(e.proc->stop(SIGTERM), 0) << e.proc->log();
}

TEST_F(Server, AcknowledgedEventsSurviveKill9) {
  const fs::path state = *tmp_ / "state-durable";
  json batch = json::array();
  const std::vector<std::string> items = {"21", "22", "23", "24"};
  for (size_t i = 0; i < items.size(); ++i)
    batch.push_back({{"user_id", "durable-user"}, {"item_id", items[i]}, {"timestamp", 1700000000 + 60 * int64_t(i)}});
  {
    Served a = start({}, {}, "durable-a", state);
    ASSERT_GT(a.port, 0);
    HttpReply r = post(a.port, "/v1/events", {{"events", batch}});
    ASSERT_EQ(r.status, 200) << r.body;
    ASSERT_EQ(r.json_body()["accepted"], 4);
    HttpReply one = post(a.port, "/v1/events", {{"user_id", "11"}, {"item_id", "25"}});
    ASSERT_EQ(one.status, 200) << one.body;
    EXPECT_EQ(a.proc->stop(SIGKILL), 128 + SIGKILL);
  }
  Served b = start({}, {}, "durable-b", state);
  ASSERT_GT(b.port, 0) << "restart on the same --state failed";
  HttpReply r = post(b.port, "/v1/recommend", {{"user_id", "durable-user"}, {"k", 100}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = r.json_body();
  EXPECT_EQ(j["history_length"], 4);
  EXPECT_EQ(j["fallback"], false);
  for (const auto& it : j["items"])
    for (const auto& seen : items) EXPECT_NE(it["item"], seen);
  // A dataset user: its dataset history + the one event (the shared server never posts for "11").
  const int64_t dataset_len = post(port(), "/v1/recommend", {{"user_id", "11"}}).json_body()["history_length"];
  EXPECT_EQ(post(b.port, "/v1/recommend", {{"user_id", "11"}}).json_body()["history_length"], dataset_len + 1);
  HttpReply metrics = http(b.port, "GET", "/metrics");
  EXPECT_NE(metrics.body.find("genrec_engine_events_stored 5"), std::string::npos) << metrics.body;
  EXPECT_NE(metrics.body.find("genrec_engine_users_stored 2"), std::string::npos);
  EXPECT_EQ(b.proc->stop(SIGTERM), 0) << b.proc->log();
}

TEST_F(Server, ReloadSwapsTheModel) {
  Served s = start({}, {}, "reload");
  ASSERT_GT(s.port, 0);
  HttpReply r = post(s.port, "/v1/reload", {{"run_dir", pop_dir().string()}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json_body()["models"]["retrieval"]["type"], "pop");
  EXPECT_EQ(http(s.port, "GET", "/v1/models").json_body()["retrieval"]["type"], "pop");
  HttpReply rec = post(s.port, "/v1/recommend", {{"user_id", "7"}, {"k", 3}});
  ASSERT_EQ(rec.status, 200) << rec.body;
  EXPECT_EQ(rec.json_body()["model"], "pop");

  // A bad run: an error, and the current model keeps serving.
  HttpReply bad = post(s.port, "/v1/reload", {{"run_dir", (*tmp_ / "no-such-run").string()}});
  EXPECT_GE(bad.status, 400) << bad.body;
  EXPECT_NE(bad.error_message().find("no-such-run"), std::string::npos) << bad.body;
  EXPECT_EQ(post(s.port, "/v1/recommend", {{"user_id", "7"}}).json_body()["model"], "pop");

  ASSERT_EQ(post(s.port, "/v1/reload", {{"run_dir", run_dir().string()}}).status, 200);
  EXPECT_EQ(post(s.port, "/v1/recommend", {{"user_id", "7"}}).json_body()["model"], "hstu");
  EXPECT_NE(http(s.port, "GET", "/metrics").body.find("genrec_engine_reloads_total 2"), std::string::npos);
  EXPECT_EQ(s.proc->stop(SIGTERM), 0) << s.proc->log();
}

TEST_F(Server, SigtermLetsTheInFlightRequestFinishAndExitsZero) {
  Served s = start({}, {}, "sigterm");
  ASSERT_GT(s.port, 0);
  // A request whose body is still arriving when the signal comes.
  const std::string body = json{{"user_id", "7"}, {"k", 4}}.dump();
  int fd = connect_loopback(s.port);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(send_all(fd, request_head("POST", "/v1/recommend", body.size(), {}) + body.substr(0, 5)));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(::kill(s.proc->pid(), SIGTERM), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // No new connections once stopping.
  bool refused = false;
  for (int i = 0; i < 50 && !refused; ++i) {
    int probe = connect_loopback(s.port);
    if (probe < 0) refused = true;
    else {
      ::close(probe);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  EXPECT_TRUE(refused) << "still accepting connections after SIGTERM";
  ASSERT_TRUE(send_all(fd, body.substr(5)));
  HttpReply r = read_reply(fd);
  ::close(fd);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body, nullptr, false).value("items", json::array()).size(), 4u) << r.body;
  EXPECT_EQ(s.proc->wait(), 0) << s.proc->log();
}

TEST_F(Server, DeadlinePassedIs503AndBodyLimitIsConfigurable) {
  // A 1 ms deadline and a 50 ms micro-batch wait: a lone recommend request cannot be scored in time.
  Served s = start({"--timeout-ms", "1", "--max-wait-us", "50000", "--max-body-bytes", "200"}, {}, "deadline");
  ASSERT_GT(s.port, 0);
  HttpReply r = post(s.port, "/v1/recommend", {{"user_id", "7"}});
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(json::parse(r.body, nullptr, false)["error"]["code"], 503) << r.body;
  EXPECT_NE(r.error_message().find("timed out"), std::string::npos) << r.body;
  json hist = json::array();
  for (int i = 0; i < 60; ++i) hist.push_back(std::to_string(1 + i % 100));
  HttpReply big = post(s.port, "/v1/recommend", {{"history", hist}});
  EXPECT_EQ(big.status, 413) << big.body;
  EXPECT_NE(big.error_message().find("200 bytes"), std::string::npos) << big.body;
  EXPECT_EQ(http(s.port, "GET", "/healthz").status, 200);
  EXPECT_NE(http(s.port, "GET", "/metrics").body.find("genrec_http_errors_total{route=\"recommend\",type=\"unavailable\"} 1"),
            std::string::npos);
  EXPECT_EQ(s.proc->stop(SIGTERM), 0) << s.proc->log();
}

TEST_F(Server, StartupErrorsExitNonZero) {
  // Port in use (the shared server's).
  {
    ServerProcess p({"serve", "--run", run_dir().string(), "--port", std::to_string(port()), "--state",
                     (*tmp_ / "state-conflict").string(), "--threads", "1"},
                    {}, *tmp_ / "serve-conflict.log");
    EXPECT_EQ(p.read_line(), "");
    EXPECT_EQ(p.wait(), 1) << p.log();
    EXPECT_NE(p.log().find("cannot listen"), std::string::npos) << p.log();
  }
  // Not a run directory: bad input.
  {
    ServerProcess p({"serve", "--run", (*tmp_ / "no-such-run").string(), "--port", "0", "--state",
                     (*tmp_ / "state-bad").string()},
                    {}, *tmp_ / "serve-bad.log");
    EXPECT_EQ(p.read_line(), "");
    EXPECT_EQ(p.wait(), 2) << p.log();
    EXPECT_NE(p.log().find("no-such-run"), std::string::npos) << p.log();
  }
  // Bad option values: usage error.
  {
    CliResult r = run_cli("serve --run '" + run_dir().string() + "' --workers 0");
    EXPECT_EQ(r.exit_code, 2) << r.err;
  }
}

}  // namespace
}  // namespace genrec::test
