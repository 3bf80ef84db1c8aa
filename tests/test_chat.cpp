// A conversation with SmolLM2-135M-Instruct (engine/chat.h): its own ChatML template, greedy
// replies, the KV cache reused across turns (and the reply it gives equal to a fresh
// evaluation's), regenerate, clear, a full context refused or shifted, a stop request, and the
// conversation saved to JSON and read back.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>

#include "engine/chat.h"
#include "engine/gguf.h"
#include "engine/vocab.h"
#include "tests/gpu.h"

namespace chorus {
namespace {

class ChatTest : public test::GpuTest {
 protected:
  void SetUp() override {
    test::GpuTest::SetUp();
    path_ = test::fetched_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2");
    const gguf::File f = gguf::File::open(path_);
    tok_ = std::make_unique<Tokenizer>(load_vocab(f));
    format_ = model_chat_format(f);
    ASSERT_NE(format_.chat_template.find("<|im_start|>"), std::string::npos) << "SmolLM2 ships a ChatML template";
    model_ = Model::load(path_, test::device(0));
  }

  ChatOptions greedy(uint32_t max_tokens = 32) const {
    ChatOptions o;
    o.sampling.temp = 0;
    o.max_tokens = static_cast<int32_t>(max_tokens);
    return o;
  }

  std::string path_;
  std::unique_ptr<Tokenizer> tok_;
  ModelChatFormat format_;
  std::unique_ptr<Model> model_;
};

TEST_F(ChatTest, AnswersAQuestionInItsOwnChatFormatAndReusesTheCacheOnTheNextTurn) {
  Context ctx(*model_, ContextOptions{1024, 1, 512});
  ChatSession chat(ctx, *tok_, format_, greedy());
  std::string streamed;
  const ChatTurnStats first = chat.send("What is the capital of France?", [&](std::string_view t) { streamed += t; });
  EXPECT_NE(streamed.find("Paris"), std::string::npos) << streamed;
  EXPECT_EQ(chat.messages().back().content, streamed);
  EXPECT_EQ(first.reused_tokens, 0u);
  EXPECT_GT(first.generated, 0u);

  const uint32_t used = chat.context_used();
  const ChatTurnStats second = chat.send("And of Germany?", nullptr);
  // Everything the first turn left in the cache that the second prompt repeats is reused.
  EXPECT_GT(second.reused_tokens, used / 2) << "reused " << second.reused_tokens << " of " << used;
  EXPECT_LT(second.prompt_tokens, 16u);

  // The reply over the reused cache equals a fresh evaluation of the same conversation.
  Context fresh_ctx(*model_, ContextOptions{1024, 1, 512});
  ChatSession fresh(fresh_ctx, *tok_, format_, greedy());
  auto history = chat.messages();
  const std::string want = history.back().content;
  history.pop_back();
  const std::string question = history.back().content;
  history.pop_back();
  fresh.set_messages(history);
  fresh.send(question, nullptr);
  EXPECT_EQ(fresh.messages().back().content, want);
}

TEST_F(ChatTest, RegenerateReplacesTheLastReplyAndClearKeepsTheSystemPrompt) {
  Context ctx(*model_, ContextOptions{1024, 1, 512});
  ChatOptions o = greedy(16);
  o.system = "You are a helpful assistant.";
  ChatSession chat(ctx, *tok_, format_, o);
  EXPECT_THROW(chat.regenerate(nullptr), std::logic_error);
  chat.send("Name a colour.", nullptr);
  ASSERT_EQ(chat.messages().size(), 3u);
  const std::string reply = chat.messages().back().content;
  chat.regenerate(nullptr);
  ASSERT_EQ(chat.messages().size(), 3u);
  EXPECT_EQ(chat.messages().back().content, reply) << "greedy: the same reply again";
  chat.clear();
  ASSERT_EQ(chat.messages().size(), 1u);
  EXPECT_EQ(chat.messages()[0].role, "system");
  EXPECT_NE(chat.render(true).find("You are a helpful assistant."), std::string::npos);
}

TEST_F(ChatTest, AFullContextIsRefusedWithAClearMessageOrShiftedWhenAsked) {
  Context ctx(*model_, ContextOptions{96, 1, 512});
  ChatSession chat(ctx, *tok_, format_, greedy(8));
  const std::string long_text(600, 'a');
  try {
    chat.send(long_text, nullptr);
    FAIL() << "a prompt longer than the context was accepted";
  } catch (const ContextFullError& e) {
    EXPECT_NE(std::string(e.what()).find("/clear"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(chat.messages().empty()) << "the refused turn is not kept";

  ChatOptions shifting = greedy(8);
  shifting.context_shift = true;
  Context ctx2(*model_, ContextOptions{96, 1, 512});
  ChatSession shifted(ctx2, *tok_, format_, shifting);
  size_t dropped = 0;
  for (int i = 0; i < 6; ++i) dropped += shifted.send("Tell me one fact about cats, number " + std::to_string(i), nullptr).dropped_messages;
  EXPECT_GT(dropped, 0u) << "six turns in 96 tokens must drop old ones";
  EXPECT_LE(shifted.context_used(), 96u);
}

TEST_F(ChatTest, AStopRequestEndsTheReplyWhereItIs) {
  Context ctx(*model_, ContextOptions{512, 1, 512});
  ChatSession chat(ctx, *tok_, format_, greedy(64));
  std::atomic<bool> stop{false};
  size_t pieces = 0;
  const ChatTurnStats st = chat.send("Write a long story about a dragon.", [&](std::string_view) {
    if (++pieces == 3) stop = true;
  }, &stop);
  EXPECT_EQ(st.stop, "stopped");
  EXPECT_LE(st.generated, 4u);
}

TEST(ChatJson, AConversationRoundTripsAndBadFilesAreNamedErrors) {
  const std::vector<ChatMessage> msgs{{"system", "be brief"}, {"user", "hi \"there\"\n"}, {"assistant", "hello"}};
  std::string json = "{\"messages\":[";
  for (size_t i = 0; i < msgs.size(); ++i)
    json += std::string(i ? "," : "") + "{\"role\":\"" + msgs[i].role + "\",\"content\":" +
            (i == 1 ? std::string("\"hi \\\"there\\\"\\n\"") : "\"" + msgs[i].content + "\"") + "}";
  json += "]}";
  const auto back = ChatSession::messages_from_json(json);
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(back[1].content, msgs[1].content);
  EXPECT_THROW(ChatSession::messages_from_json("not json"), std::invalid_argument);
  EXPECT_THROW(ChatSession::messages_from_json("{\"messages\": [{\"role\": 1}]}"), std::invalid_argument);
  EXPECT_THROW(ChatSession::messages_from_json("[]"), std::invalid_argument);
}

}  // namespace
}  // namespace chorus
