"""Whether a customer's message asks for a person, in Chinese or English: a pure function, no Django.

Chosen behaviour (tested case by case in tests/test_handoff_phrases.py):
- A request counts: 转人工, 人工客服, 找客服, 人工, 真人, 找个人, 客服电话, "human", "real person",
  "agent", "talk to someone", "representative", "operator", alone or after a verb asking for one.
- Negated requests do not: "I am not asking for a human", "no agent please", 不用转人工, 不需要人工.
  English negation covers its clause (up to a comma, a full stop or "but"); Chinese often has no
  punctuation between clauses, so there a negation must stand just before the request (within
  three characters): 我不要机器人我要人工 still asks.
- A question about the assistant itself is not a request: "are you a human?", 你是真人吗 (the
  assistant can answer it; "can I talk to a human?" is a request).
- Words inside other words and other senses do not count: "agentive", "user agent string",
  "travel agent", "human error", 人工智能, 人工费, 查找个人信息.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["asks_for_a_person"]

# --- English -------------------------------------------------------------------------------------

_PERSON = (
    r"(?:a |an |the |some |your |one of your )?"
    r"(?:real |live |actual |human |customer service |customer support |support )?"
    r"(?:human(?: being)?|person|agent|representative|rep|operator|staff(?: member)?|someone|somebody"
    r"|manager|supervisor|customer service|customer support)"
)
# A verb asking for a person, then the person within a few words.
_ENGLISH_REQUEST = re.compile(
    r"\b(?:talk|speak|chat|connect|transfer|put|get|want|need|give|let|escalate|reach|contact|call|switch"
    r"|forward|bring|pass|request|prefer|see|(?:can|could|may) (?:i|we) have|help from|assistance from)\b"
    r"(?:[ ](?:me|us|to|with|through|for|over|in|on|touch|please|just|now|directly|straight|a|an|the)){0,5}"
    rf"[ ]{_PERSON}\b"
)
# The whole message is the request: "agent", "human please", "real person!", "operator".
_ENGLISH_ALONE = re.compile(
    r"^(?:(?:please|pls|plz|hi|hello|hey|ok|okay|um|so)[ ])*"
    r"(?:a |an )?(?:real |live |human )?(?:human|person|agent|representative|rep|operator|live chat"
    r"|customer service|customer support|human agent|live agent)"
    r"(?:[ ](?:please|pls|plz|now|thanks|thank you|asap))*$"
)
_ENGLISH_NEGATION = re.compile(
    r"\b(?:not|no|never|don't|dont|do not|doesn't|does not|didn't|did not|won't|will not|without"
    r"|no need|nobody|none)\b"
)
# A question about the assistant: "are you a human?", "am I talking to a real person?", "is this a bot?"
_ENGLISH_ABOUT_THE_BOT = re.compile(
    r"\b(?:are you|r u|am i (?:talking|speaking|chatting) (?:to|with)|is this|is that|is it)"
    r"(?: even| really| actually)? (?:a |an )?(?:real |actual |live )?(?:human|person|bot|robot|ai|machine)\b"
)
_ENGLISH_CLAUSE_BREAK = re.compile(r"[,.;:!?()]|\bbut\b|\bthough\b|\bhowever\b|\bjust\b")

# --- Chinese -------------------------------------------------------------------------------------

# 人工 in other words: 人工智能 (artificial intelligence), 人工费 (labour cost), 人工湖 (a man-made lake)…
_CHINESE_REQUEST = re.compile(
    r"转人工|人工客服|人工服务|人工坐席|人工(?!智能|费|湖|成本|合成|降雨|草|岛|呼吸|授精|心脏|耳蜗|关节|晶体)"
    r"|真人(?!秀|版|照|cs|游戏|大小)|找客服|联系客服|叫客服|要客服|接客服|客服电话|客服热线|客服人员"
    r"|找个人(?!信息|资料|订单|中心|账户|帐户|账号|帐号|主页|设置|隐私|数据|记录|空间)"
    r"|找人工|找个真人|找个客服|找工作人员|工作人员|^客服$|^客服[吗呢啊呀]?$"
)
_CHINESE_NEGATION = re.compile(r"不用|不需要|不要|不想|不必|无需|别|用不着|没必要|不是要|不找|不转|甭")
_CHINESE_ABOUT_THE_BOT = re.compile(
    r"(?:你|您|这|对面)(?:是不是|是)(?:个|一个)?(?:真人|人工|机器人|ai|真的人)(?:吗|么|嘛|还是|？|\?|$)"
    r"|是(?:真人|人工)还是(?:机器人|ai)|(?:机器人|ai)还是(?:真人|人工)"
)
_CHINESE_CLAUSE_BREAK = re.compile(r"[，。！？；、,.!?;]|但是|但|可是|不过")
_CHINESE_NEGATION_REACH = 3


def _normalised(text: str) -> str:
    """Full-width forms folded, lower case, apostrophes straightened, spaces collapsed."""
    folded = unicodedata.normalize("NFKC", text).lower().replace("’", "'").replace("‘", "'")
    return re.sub(r"\s+", " ", folded).strip()


def _english_asks(clause: str) -> bool:
    clause = clause.strip()
    if not clause or _ENGLISH_ABOUT_THE_BOT.search(clause):
        return False
    if _ENGLISH_ALONE.match(clause):
        return True
    for match in _ENGLISH_REQUEST.finditer(clause):
        # "why can't I talk to a human" asks all the same: the negation is about being able to.
        before = re.sub(
            r"\b(?:can't|cannot|can not|couldn't|could not) (?:i|we)\b", "", clause[: match.start()]
        )
        if not _ENGLISH_NEGATION.search(before) and not _ENGLISH_NEGATION.search(match.group(0)):
            return True
    return False


def _chinese_asks(clause: str) -> bool:
    compact = clause.replace(" ", "")
    if not compact or _CHINESE_ABOUT_THE_BOT.search(compact):
        return False
    for match in _CHINESE_REQUEST.finditer(compact):
        window = compact[max(0, match.start() - _CHINESE_NEGATION_REACH - 3) : match.start()]
        negations = list(_CHINESE_NEGATION.finditer(window))
        if not negations or len(window) - negations[-1].end() > _CHINESE_NEGATION_REACH:
            return True
    return False


def asks_for_a_person(text: str) -> bool:
    """Whether the message asks to be handed to a person (not negated, not a question about the bot)."""
    normalised = _normalised(text)
    if not normalised:
        return False
    # The whole message may be a Chinese question about the bot that punctuation would split.
    if _CHINESE_ABOUT_THE_BOT.search(normalised.replace(" ", "")) and not _CHINESE_CLAUSE_BREAK.search(
        normalised.rstrip("?？")
    ):
        return False
    if any(_chinese_asks(clause) for clause in _CHINESE_CLAUSE_BREAK.split(normalised)):
        return True
    return any(_english_asks(clause) for clause in _ENGLISH_CLAUSE_BREAK.split(normalised))
