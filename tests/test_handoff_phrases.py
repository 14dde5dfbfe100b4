"""The phrase trigger's detector: requests for a person in both languages, and what must not count."""

from __future__ import annotations

import pytest

from agents.phrases import asks_for_a_person

ASKS_FOR_A_PERSON = [
    "转人工",
    "转人工！",
    "人工客服",
    "我要人工客服",
    "找客服",
    "人工",
    "人工。",
    "真人",
    "我想找真人聊",
    "找个人来处理一下",
    "客服电话？",
    "客服电话是多少",
    "请帮我转接人工服务",
    "我不要机器人我要人工",
    "别让机器人回答了，转人工",
    "你们有没有工作人员",
    "联系客服",
    "客 服",
    "ＨＵＭＡＮ",
    "human",
    "Human please",
    "real person",
    "A real person, please!",
    "agent",
    "Agent!",
    "operator",
    "representative please",
    "talk to someone",
    "Can I talk to someone?",
    "I want to speak to a human",
    "Can I speak with a real person?",
    "please connect me to an agent",
    "Transfer me to a live agent",
    "get me a human now",
    "I need a human",
    "Let me talk to your manager",
    "I don't want a bot, give me a human",
    "This isn't helping. I want a person",
    "Why can't I talk to a human?",
    "Is there any way to reach a customer service representative?",
    "I need help from a person",
    "can i have a human",
]

DOES_NOT_ASK = [
    "",
    "   ",
    "I am not asking for a human",
    "I'm not asking for a human, just tell me the price",
    "no agent please",
    "I don't need a person",
    "I do not want to talk to an agent",
    "never mind the operator",
    "不用转人工",
    "不需要人工",
    "不用找客服了，谢谢",
    "别转人工",
    "无需人工服务",
    "Are you a human?",
    "are you a real person",
    "Am I talking to a real person?",
    "Is this a bot?",
    "你是真人吗",
    "你是真人吗？",
    "你是不是机器人",
    "是真人还是机器人？",
    "agentive",
    "What is the user agent string of your app?",
    "My travel agent booked it",
    "The agent who called me was rude",
    "It was human error on the courier's side",
    "人工智能真厉害",
    "安装要另付人工费吗",
    "我想查找个人订单",
    "在哪里查找个人信息",
    "这个耳机是真人秀里的那款吗",
    "How long does shipping take?",
    "退货要多久",
    "What are your opening hours?",
    "My order number is 12345",
    "people say the battery lasts long",
    "Thanks, that helped!",
    "谢谢，已经解决了",
    "we need people like you",
    "I have a person here with me",
    "Someone stole my parcel",
    "talk to you later",
]


@pytest.mark.parametrize("text", ASKS_FOR_A_PERSON)
def test_it_recognises_a_request_for_a_person(text: str) -> None:
    assert asks_for_a_person(text) is True


@pytest.mark.parametrize("text", DOES_NOT_ASK)
def test_it_does_not_mistake_other_messages_for_a_request(text: str) -> None:
    assert asks_for_a_person(text) is False


def test_it_has_at_least_thirty_cases_each_way() -> None:
    assert len(set(ASKS_FOR_A_PERSON)) >= 30
    assert len(set(DOES_NOT_ASK)) >= 30
