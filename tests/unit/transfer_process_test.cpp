// The transfer process driven by hand: a harness keeps instance states the way the handler runner
// does, and a small in-memory bank lets the real Account and Transfer aggregates answer its
// commands.
#include "bank/transfer_process.hpp"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bank/bank.hpp"

namespace bank {
namespace {

using cqrs::CommandRequest;
using cqrs::Event;
using cqrs::Interest;
using nlohmann::json;

template <cqrs::Message E>
Event event_of(const E& payload, const std::string& stream_id) {
  Event event;
  event.record.type = std::string(cqrs::type_name_of<E>());
  event.record.stream_id = stream_id;
  event.data = json(payload);
  event.record.data = event.data.dump();
  event.metadata = json::object();
  return event;
}

template <cqrs::Message E>
Event on_account(const E& payload) {
  return event_of(payload, "account-" + payload.account_id);
}

template <cqrs::Message E>
Event on_transfer(const E& payload) {
  return event_of(payload, "transfer-" + payload.transfer_id);
}

// Commands as a JSON array of {type, data}, so that a mismatch prints both sides in full.
json describe(const std::vector<CommandRequest>& commands) {
  json out = json::array();
  for (const CommandRequest& command : commands) {
    out.push_back({{"type", command.type}, {"data", command.data}});
  }
  return out;
}

template <cqrs::Message... Cs>
json expected(const Cs&... commands) {
  return describe({CommandRequest::of(commands)...});
}

// Applies Interest the way the handler runner does (see ProcessManager in handler.hpp): start
// creates or continues, continue needs the instance, stop handles then deletes it.
class Harness {
 public:
  std::vector<CommandRequest> feed(const Event& event) {
    Interest interest = process_.interested(event);
    if (interest.kind == Interest::Kind::kIgnore) return {};
    auto found = instances_.find(interest.instance);
    if (found == instances_.end() && interest.kind != Interest::Kind::kStart) return {};
    json state = found == instances_.end() ? json::object() : found->second;
    std::vector<CommandRequest> commands = process_.handle(state, event);
    json next = process_.apply(state, event);
    if (interest.kind == Interest::Kind::kStop) {
      instances_.erase(interest.instance);
    } else {
      instances_[interest.instance] = next;
    }
    return commands;
  }
  json send(const Event& event) { return describe(feed(event)); }

  bool running(const std::string& transfer_id) const { return instances_.contains(transfer_id); }
  const json& state(const std::string& transfer_id) const { return instances_.at(transfer_id); }
  size_t instances() const { return instances_.size(); }
  const TransferProcess& process() const { return process_; }

 private:
  TransferProcess process_;
  std::map<std::string, json> instances_;
};

TEST(TransferProcess, NamesItselfAndTheEventsItReactsTo) {
  TransferProcess process;
  EXPECT_EQ(process.name(), "bank_transfer_process");
  EXPECT_EQ(process.kind(), cqrs::HandlerKind::kProcessManager);
  EXPECT_EQ(
      process.event_types(),
      (std::vector<std::string>{"TransferRequested", "AccountDebited", "TransferDebitRejected",
                                "AccountCredited", "TransferCreditRejected", "AccountRefunded",
                                "TransferCompleted", "TransferFailed"}));
}

TEST(TransferProcess, HappyPathDebitsThenCreditsThenCompletes) {
  Harness pm;
  EXPECT_EQ(pm.send(on_transfer(TransferRequested{"t1", "a1", "a2", 300})),
            expected(DebitAccount{"a1", "t1", 300}));
  EXPECT_EQ(pm.send(on_account(AccountDebited{"a1", "t1", 300, 700})),
            expected(CreditAccount{"a2", "t1", 300}));
  EXPECT_EQ(pm.send(on_account(AccountCredited{"a2", "t1", 300, 300})),
            expected(CompleteTransfer{"t1"}));
  EXPECT_EQ(pm.send(on_transfer(TransferCompleted{"t1"})), expected());
  EXPECT_FALSE(pm.running("t1"));
}

TEST(TransferProcess, StateKeepsWhatLaterStepsNeed) {
  Harness pm;
  pm.feed(on_transfer(TransferRequested{"t1", "a1", "a2", 300}));
  EXPECT_EQ(pm.state("t1"), json::parse(R"({"from_account": "a1", "to_account": "a2",
      "amount": 300, "step": "debiting", "credit_rejection": ""})"));
  pm.feed(on_account(AccountDebited{"a1", "t1", 300, 700}));
  EXPECT_EQ(pm.state("t1")["step"], "crediting");
  pm.feed(on_account(TransferCreditRejected{"a2", "t1", 300, "account_closed"}));
  EXPECT_EQ(pm.state("t1"), json::parse(R"({"from_account": "a1", "to_account": "a2",
      "amount": 300, "step": "refunding", "credit_rejection": "account_closed"})"));
  pm.feed(on_account(AccountRefunded{"a1", "t1", 300, 1000}));
  EXPECT_EQ(pm.state("t1")["step"], "failing");
}

TEST(TransferProcess, InsufficientFundsFailsTheTransfer) {
  Harness pm;
  pm.feed(on_transfer(TransferRequested{"t1", "a1", "a2", 300}));
  EXPECT_EQ(pm.send(on_account(TransferDebitRejected{"a1", "t1", 300, "insufficient_funds"})),
            expected(FailTransfer{"t1", "insufficient_funds"}));
  EXPECT_EQ(pm.send(on_transfer(TransferFailed{"t1", "insufficient_funds"})), expected());
  EXPECT_FALSE(pm.running("t1"));
}

TEST(TransferProcess, MissingSourceAccountFailsTheTransfer) {
  Harness pm;
  pm.feed(on_transfer(TransferRequested{"t1", "ghost", "a2", 300}));
  EXPECT_EQ(pm.send(on_account(TransferDebitRejected{"ghost", "t1", 300, "account_not_found"})),
            expected(FailTransfer{"t1", "account_not_found"}));
  EXPECT_EQ(pm.state("t1")["step"], "failing");
}

TEST(TransferProcess, MissingTargetAccountRefundsThenFailsWithTheCreditReason) {
  Harness pm;
  pm.feed(on_transfer(TransferRequested{"t1", "a1", "ghost", 300}));
  pm.feed(on_account(AccountDebited{"a1", "t1", 300, 700}));
  EXPECT_EQ(pm.send(on_account(TransferCreditRejected{"ghost", "t1", 300, "account_not_found"})),
            expected(RefundAccount{"a1", "t1", 300}));
  EXPECT_EQ(pm.send(on_account(AccountRefunded{"a1", "t1", 300, 1000})),
            expected(FailTransfer{"t1", "account_not_found"}));
  EXPECT_EQ(pm.send(on_transfer(TransferFailed{"t1", "account_not_found"})), expected());
  EXPECT_FALSE(pm.running("t1"));
}

TEST(TransferProcess, ClosedTargetAccountRefundsThenFailsWithTheCreditReason) {
  Harness pm;
  pm.feed(on_transfer(TransferRequested{"t1", "a1", "a3", 300}));
  pm.feed(on_account(AccountDebited{"a1", "t1", 300, 700}));
  EXPECT_EQ(pm.send(on_account(TransferCreditRejected{"a3", "t1", 300, "account_closed"})),
            expected(RefundAccount{"a1", "t1", 300}));
  EXPECT_EQ(pm.send(on_account(AccountRefunded{"a1", "t1", 300, 1000})),
            expected(FailTransfer{"t1", "account_closed"}));
}

TEST(TransferProcess, EventsWithoutATransferIdAreIgnored) {
  Harness pm;
  EXPECT_EQ(pm.send(on_account(AccountOpened{"a1", "ada", "ada@example.com", 100})), expected());
  EXPECT_EQ(pm.send(on_account(MoneyDeposited{"a1", 50, 150})), expected());
  EXPECT_EQ(pm.send(on_account(MoneyWithdrawn{"a1", 20, 130})), expected());
  EXPECT_EQ(pm.send(on_account(AccountClosed{"a1"})), expected());
  EXPECT_EQ(pm.instances(), 0u);

  // Payloads of the wrong shape are not this process's to judge.
  Event odd = on_account(AccountDebited{"a1", "t1", 300, 700});
  odd.data["transfer_id"] = 7;
  EXPECT_EQ(pm.process().interested(odd).kind, Interest::Kind::kIgnore);
  odd.data = json::array();
  EXPECT_EQ(pm.process().interested(odd).kind, Interest::Kind::kIgnore);
}

TEST(TransferProcess, StepsOfUnknownTransfersAreIgnored) {
  Harness pm;
  EXPECT_EQ(pm.process().interested(on_account(AccountDebited{"a1", "t9", 5, 0})).kind,
            Interest::Kind::kContinue);
  EXPECT_EQ(pm.send(on_account(AccountDebited{"a1", "t9", 5, 0})), expected());
  EXPECT_EQ(pm.send(on_account(TransferCreditRejected{"a2", "t9", 5, "account_closed"})),
            expected());
  EXPECT_EQ(pm.send(on_transfer(TransferCompleted{"t9"})), expected());
  EXPECT_EQ(pm.instances(), 0u) << "continue and stop never create an instance";
}

TEST(TransferProcess, FinishingStopsAndDeletesTheInstance) {
  Harness pm;
  pm.feed(on_transfer(TransferRequested{"t1", "a1", "a2", 300}));
  pm.feed(on_transfer(TransferRequested{"t2", "a1", "a2", 400}));
  EXPECT_EQ(pm.process().interested(on_transfer(TransferCompleted{"t1"})).kind,
            Interest::Kind::kStop);
  EXPECT_EQ(pm.send(on_transfer(TransferCompleted{"t1"})), expected());
  EXPECT_EQ(pm.send(on_transfer(TransferFailed{"t2", "insufficient_funds"})), expected());
  EXPECT_EQ(pm.instances(), 0u);
  // A late step of a finished transfer finds no instance.
  EXPECT_EQ(pm.send(on_account(AccountDebited{"a1", "t1", 300, 700})), expected());
  EXPECT_EQ(pm.instances(), 0u);
}

TEST(TransferProcess, ConcurrentTransfersFromOneAccountStayApart) {
  Harness pm;
  pm.feed(on_transfer(TransferRequested{"t1", "a1", "a2", 100}));
  pm.feed(on_transfer(TransferRequested{"t2", "a1", "a3", 200}));
  EXPECT_EQ(pm.send(on_account(AccountDebited{"a1", "t2", 200, 800})),
            expected(CreditAccount{"a3", "t2", 200}));
  EXPECT_EQ(pm.send(on_account(AccountDebited{"a1", "t1", 100, 700})),
            expected(CreditAccount{"a2", "t1", 100}));
  EXPECT_EQ(pm.send(on_account(TransferCreditRejected{"a2", "t1", 100, "account_closed"})),
            expected(RefundAccount{"a1", "t1", 100}));
  EXPECT_EQ(pm.send(on_account(AccountCredited{"a3", "t2", 200, 200})),
            expected(CompleteTransfer{"t2"}));
  EXPECT_EQ(pm.send(on_account(AccountRefunded{"a1", "t1", 100, 800})),
            expected(FailTransfer{"t1", "account_closed"}));
}

// Only the answer the instance waits for moves it: a step out of order, from another account or
// for another amount (e.g. a step command sent by hand with this transfer id) changes nothing.
TEST(TransferProcess, AnswersThatDoNotFitTheStepAreIgnored) {
  Harness pm;
  pm.feed(on_transfer(TransferRequested{"t1", "a1", "a2", 300}));
  json waiting = pm.state("t1");
  EXPECT_EQ(pm.send(on_account(AccountCredited{"a2", "t1", 300, 300})), expected());
  EXPECT_EQ(pm.send(on_account(AccountDebited{"a9", "t1", 300, 0})), expected());
  EXPECT_EQ(pm.send(on_account(AccountDebited{"a1", "t1", 1, 999})), expected());
  EXPECT_EQ(pm.send(on_account(AccountRefunded{"a1", "t1", 300, 1300})), expected());
  EXPECT_EQ(pm.send(on_transfer(TransferRequested{"t1", "a1", "a2", 300})), expected())
      << "a second start continues the instance";
  EXPECT_EQ(pm.state("t1"), waiting);

  EXPECT_EQ(pm.send(on_account(AccountDebited{"a1", "t1", 300, 700})),
            expected(CreditAccount{"a2", "t1", 300}));
  EXPECT_EQ(pm.send(on_account(AccountDebited{"a1", "t1", 300, 700})), expected());
  EXPECT_EQ(pm.send(on_account(TransferCreditRejected{"a1", "t1", 300, "account_closed"})),
            expected());
  EXPECT_EQ(pm.state("t1")["step"], "crediting");
}

// The real aggregates behind the domain registry, every recorded event in one global log, and
// the process fed from that log in order, its commands executed as the runner would dispatch
// them.
class Bank {
 public:
  Bank() { register_domain(domain_); }

  // Executes a command on its aggregate and logs the events; returns the rejection code, or "".
  std::string send(const std::string& type, const json& data) {
    auto command = domain_.decode_json(type, data);
    if (!command.ok()) return command.error().to_string();
    auto& instance = streams_[command->stream_id];
    if (!instance) instance = command->type->aggregate->create();
    cqrs::Outcome outcome = instance->execute(*command);
    if (outcome.rejected()) return outcome.rejection().code;
    for (const cqrs::NewEvent& recorded : outcome.events()) {
      EXPECT_TRUE(instance->apply(recorded.type, recorded.data).ok());
      Event event;
      event.record.type = recorded.type;
      event.record.stream_id = command->stream_id;
      event.data = recorded.data;
      log_.push_back(event);
    }
    return "";
  }
  template <cqrs::Message C>
  std::string send(const C& command) {
    return send(std::string(cqrs::type_name_of<C>()), json(command));
  }

  // Feeds the log to the process until nothing is left; every step command must be accepted.
  void run_process() {
    for (size_t next = 0; next < log_.size(); ++next) {
      Event event = log_[next];  // a copy: send() grows the log
      for (const CommandRequest& command : process_.feed(event)) {
        EXPECT_EQ(send(command.type, command.data), "") << command.type << " " << command.data;
      }
    }
  }

  json state(const std::string& stream_id) const { return streams_.at(stream_id)->state(); }
  int64_t balance(const std::string& account_id) const {
    return state("account-" + account_id)["balance"].get<int64_t>();
  }
  const Harness& process() const { return process_; }

 private:
  cqrs::Domain domain_;
  std::map<std::string, std::unique_ptr<cqrs::AggregateInstance>> streams_;
  std::vector<Event> log_;
  Harness process_;
};

TEST(TransferProcess, MoneyIsConservedWithTheRealAggregates) {
  Bank bank;
  ASSERT_EQ(bank.send(OpenAccount{"a1", "ada", "ada@example.com", 1000}), "");
  ASSERT_EQ(bank.send(OpenAccount{"a2", "bob", "bob@example.com", 0}), "");
  ASSERT_EQ(bank.send(OpenAccount{"a3", "cy", "cy@example.com", 0}), "");
  ASSERT_EQ(bank.send(CloseAccount{"a3"}), "");
  // All requested before the process runs, so their steps interleave on a1.
  ASSERT_EQ(bank.send(TransferMoney{"t-ok", "a1", "a2", 300}), "");
  ASSERT_EQ(bank.send(TransferMoney{"t-too-much", "a1", "a2", 5000}), "");
  ASSERT_EQ(bank.send(TransferMoney{"t-no-target", "a1", "ghost", 200}), "");
  ASSERT_EQ(bank.send(TransferMoney{"t-closed-target", "a1", "a3", 100}), "");
  ASSERT_EQ(bank.send(TransferMoney{"t-no-source", "ghost", "a2", 50}), "");
  ASSERT_EQ(bank.send(DepositMoney{"a2", 10}), "");  // a plain deposit in between
  bank.run_process();

  EXPECT_EQ(bank.balance("a1"), 700);
  EXPECT_EQ(bank.balance("a2"), 310);
  EXPECT_EQ(bank.balance("a3"), 0);
  EXPECT_EQ(bank.balance("ghost"), 0);
  EXPECT_EQ(bank.balance("a1") + bank.balance("a2") + bank.balance("a3") + bank.balance("ghost"),
            1000 + 10);

  auto ended = [&bank](const std::string& transfer_id) {
    json transfer = bank.state("transfer-" + transfer_id);
    return transfer["status"].get<std::string>() + ":" +
           transfer["failure_reason"].get<std::string>();
  };
  EXPECT_EQ(ended("t-ok"), "completed:");
  EXPECT_EQ(ended("t-too-much"), "failed:insufficient_funds");
  EXPECT_EQ(ended("t-no-target"), "failed:account_not_found");
  EXPECT_EQ(ended("t-closed-target"), "failed:account_closed");
  EXPECT_EQ(ended("t-no-source"), "failed:account_not_found");
  EXPECT_EQ(bank.process().instances(), 0u) << "every finished transfer stopped its instance";
}

}  // namespace
}  // namespace bank
