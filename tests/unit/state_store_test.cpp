#include "runtime/state_store.hpp"

#include <algorithm>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace troupe::runtime;

namespace {

std::string temp_db(const std::string& name) {
  auto dir =
      std::filesystem::temp_directory_path() / ("troupe-store-test-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto path = dir / (name + ".db");
  std::filesystem::remove(path);
  return path.string();
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

/// A real redis-server on a free loopback port for the test's lifetime.
struct redis_server {
  redis_server() : port(free_port()) {
    pid = fork();
    if (pid == 0) {
      int devnull = open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      dup2(devnull, 2);
      auto p = std::to_string(port);
      execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1", "--save",
             "", "--appendonly", "no", "--loglevel", "warning", nullptr);
      _exit(127);
    }
    for (int i = 0; i < 200; ++i) { // up to 2 s
      try {
        make_redis_state_store(url());
        return;
      } catch (const store_error&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  }
  ~redis_server() {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port) + "/0"; }
  int port;
  pid_t pid = -1;
};

/// Runs the same behaviour against every store.
void for_each_store(const std::string& name,
                    const std::function<void(std::shared_ptr<state_store>)>& f) {
  {
    SCOPED_TRACE("memory");
    f(make_memory_state_store());
  }
  {
    SCOPED_TRACE("sqlite");
    f(make_sqlite_state_store(temp_db(name)));
  }
  {
    SCOPED_TRACE("redis");
    redis_server redis;
    f(make_redis_state_store(redis.url()));
  }
}

const agent_id a{"chat", "k1"};

} // namespace

TEST(StateStore, KeepsHistoryInOrderWithToolCalls) {
  for_each_store("history", [](std::shared_ptr<state_store> s) {
    EXPECT_TRUE(s->create(a));
    EXPECT_FALSE(s->create(a));
    s->begin_turn(a, "r1", "what is 2+2");
    s->append(a, {"assistant", "", {{"c1", "calculator", R"({"expression":"2+2"})"}}, {}, {}});
    s->append(a, {"tool", "4", {}, "c1", "calculator"});
    auto rec = s->load(a);
    ASSERT_TRUE(rec);
    ASSERT_EQ(rec->history.size(), 3u);
    EXPECT_EQ(rec->history[0].content, "what is 2+2");
    EXPECT_EQ(rec->history[1].tool_calls.at(0).arguments, R"({"expression":"2+2"})");
    EXPECT_EQ(rec->history[2].tool_call_id, "c1");
    EXPECT_FALSE(s->load({"chat", "nobody"}));
  });
}

TEST(StateStore, AnAgentKeepsTheOwnerThatCreatedItUntilItIsErased) {
  for_each_store("owners", [](std::shared_ptr<state_store> s) {
    EXPECT_FALSE(s->owner_of(a));
    EXPECT_TRUE(s->create(a, "alice"));
    EXPECT_FALSE(s->create(a, "bob")); // exists: the owner stays
    EXPECT_EQ(s->owner_of(a), "alice");
    EXPECT_TRUE(s->create({"chat", "k2"}, "alice"));
    EXPECT_TRUE(s->create({"chat", "k3"})); // nobody's
    EXPECT_EQ(s->owner_of({"chat", "k3"}), "");
    s->append(a, {"user", "hi", {}, {}, {}});
    EXPECT_EQ(s->owner_of(a), "alice"); // writing history does not touch it
    EXPECT_EQ(s->load(a)->owner, "alice");
    EXPECT_EQ(s->load(a)->history.size(), 1u);
    EXPECT_EQ(s->load({"chat", "k3"})->owner, "");
    auto owned = s->list_owned("alice");
    std::sort(owned.begin(), owned.end());
    ASSERT_EQ(owned.size(), 2u);
    EXPECT_EQ(owned[0].key, "k1");
    EXPECT_TRUE(s->list_owned("bob").empty());
    EXPECT_TRUE(s->erase(a));
    EXPECT_FALSE(s->owner_of(a));
    EXPECT_EQ(s->list_owned("alice").size(), 1u);
    EXPECT_EQ(s->count_owned("alice"), 1u);
    EXPECT_EQ(s->count_owned("bob"), 0u);
    EXPECT_TRUE(s->create(a, "bob")); // a new agent of that name is bob's
    EXPECT_EQ(s->owner_of(a), "bob");
    EXPECT_EQ(s->load(a)->owner, "bob");
  });
}

TEST(StateStore, RequestLogTracksOpenAndFinishedTurns) {
  for_each_store("requests", [](std::shared_ptr<state_store> s) {
    s->begin_turn(a, "r1", "one");
    s->begin_turn({"chat", "k2"}, "r2", "two");
    auto open = s->open_turns();
    ASSERT_EQ(open.size(), 2u);
    EXPECT_EQ(open[0].second.id, "r1");
    s->finish_turn(a, "r1", request_state::done, R"({"answer":"x"})");
    open = s->open_turns();
    ASSERT_EQ(open.size(), 1u);
    EXPECT_EQ(open[0].first.key, "k2");
    auto e = s->find_request(a, "r1");
    ASSERT_TRUE(e);
    EXPECT_EQ(e->state, request_state::done);
    EXPECT_EQ(e->text, "one");
    EXPECT_EQ(e->outcome, R"({"answer":"x"})");
    EXPECT_FALSE(s->find_request(a, "nope"));
  });
}

TEST(StateStore, FinishedRequestsExpireInBatchesAndRunningOnesStay) {
  for_each_store("expire", [](std::shared_ptr<state_store> s) {
    auto now = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
          .count();
    };
    for (auto id : {"r1", "r2", "r3"}) {
      s->begin_turn(a, id, "one");
      s->finish_turn(a, id, request_state::done, R"({"answer":"x"})");
    }
    s->begin_turn({"chat", "k2"}, "r4", "cut by a crash");
    EXPECT_EQ(s->expire_requests(now() - 60000, 10), 0u) << "none is a minute old";
    auto later = now() + 1000;
    EXPECT_EQ(s->expire_requests(later, 2), 2u);
    EXPECT_EQ(s->expire_requests(later, 2), 1u);
    EXPECT_EQ(s->expire_requests(later, 2), 0u);
    for (auto id : {"r1", "r2", "r3"})
      EXPECT_FALSE(s->find_request(a, id)) << id;
    ASSERT_TRUE(s->find_request({"chat", "k2"}, "r4"));
    EXPECT_EQ(s->open_turns().size(), 1u);
    // The history stays: only the log of outcomes is forgotten.
    EXPECT_EQ(s->load(a)->history.size(), 3u);
    // An id used again after it expired starts a new entry, which expires again.
    s->begin_turn(a, "r1", "again");
    EXPECT_EQ(s->expire_requests(later, 10), 0u) << "running";
    s->finish_turn(a, "r1", request_state::failed, R"({"code":"timeout"})");
    EXPECT_EQ(s->find_request(a, "r1")->text, "again");
    EXPECT_EQ(s->expire_requests(now() + 1000, 10), 1u);
  });
}

TEST(StateStore, EraseRemovesEverything) {
  for_each_store("erase", [](std::shared_ptr<state_store> s) {
    s->begin_turn(a, "r1", "one");
    EXPECT_TRUE(s->erase(a));
    EXPECT_FALSE(s->erase(a));
    EXPECT_FALSE(s->load(a));
    EXPECT_FALSE(s->find_request(a, "r1"));
    EXPECT_TRUE(s->open_turns().empty());
    EXPECT_TRUE(s->list().empty());
  });
}

TEST(StateStore, SqliteSurvivesReopening) {
  auto path = temp_db("reopen");
  {
    auto s = make_sqlite_state_store(path);
    s->begin_turn(a, "r1", "hello");
    s->append(a, {"assistant", "hi there", {}, {}, {}});
  }
  auto s = make_sqlite_state_store(path);
  auto rec = s->load(a);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->history.size(), 2u);
  EXPECT_EQ(rec->history[1].content, "hi there");
  EXPECT_EQ(s->open_turns().size(), 1u);
  EXPECT_EQ(s->list().size(), 1u);
}

TEST(StateStore, SqliteRefusesANewerSchema) {
  auto path = temp_db("newer");
  make_sqlite_state_store(path);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "UPDATE meta SET value='99' WHERE key='schema_version'", nullptr, nullptr,
               nullptr);
  sqlite3_close(db);
  try {
    make_sqlite_state_store(path);
    FAIL() << "a newer schema was accepted";
  } catch (const store_error& e) {
    EXPECT_NE(std::string{e.what()}.find("schema version 99"), std::string::npos) << e.what();
  }
}

TEST(StateStore, SqliteReportsAnUnusablePath) {
  EXPECT_THROW(make_sqlite_state_store("/proc/troupe/cannot/be/here.db"), store_error);
}

TEST(StateStore, JobsAreClaimedOnceAndLapsedClaimsAreTakenAgain) {
  for_each_store("jobs", [](std::shared_ptr<state_store> s) {
    s->enqueue_job({"job-1", a, "first", job_state::queued, {}, {}, 0});
    s->enqueue_job({"job-2", a, "second", job_state::queued, {}, {}, 0});
    auto j1 = s->claim_job("n1", std::chrono::minutes(1));
    ASSERT_TRUE(j1);
    EXPECT_EQ(j1->id, "job-1");
    EXPECT_EQ(j1->state, job_state::running);
    EXPECT_EQ(j1->attempts, 1);
    auto j2 = s->claim_job("n2", std::chrono::milliseconds(250));
    ASSERT_TRUE(j2);
    EXPECT_EQ(j2->id, "job-2");
    EXPECT_FALSE(s->claim_job("n1", std::chrono::minutes(1)));
    // n2's claim lapses (its node died): n1 takes the job over.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto again = s->claim_job("n1", std::chrono::minutes(1));
    ASSERT_TRUE(again);
    EXPECT_EQ(again->id, "job-2");
    EXPECT_EQ(again->attempts, 2);
    s->finish_job("job-2", job_state::done, R"({"answer":"ok"})");
    auto done = s->find_job("job-2");
    ASSERT_TRUE(done);
    EXPECT_EQ(done->state, job_state::done);
    EXPECT_EQ(done->outcome, R"({"answer":"ok"})");
    EXPECT_EQ(done->message, "second");
    EXPECT_FALSE(s->find_job("job-3"));
  });
}

TEST(StateStore, ANodeTakesBackItsOwnRunningJobsAtStart) {
  for_each_store("requeue", [](std::shared_ptr<state_store> s) {
    s->enqueue_job({"job-1", a, "first", job_state::queued, {}, {}, 0});
    ASSERT_TRUE(s->claim_job("n1", std::chrono::minutes(10)));
    EXPECT_FALSE(s->claim_job("n1", std::chrono::minutes(10)));
    EXPECT_EQ(s->requeue_jobs_of("n1"), 1u); // n1 restarted
    auto j = s->claim_job("n1", std::chrono::minutes(10));
    ASSERT_TRUE(j);
    EXPECT_EQ(j->id, "job-1");
  });
}
