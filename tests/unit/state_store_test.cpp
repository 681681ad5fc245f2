#include "runtime/state_store.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <filesystem>
#include <functional>
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

/// Runs the same behaviour against both stores.
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
