"""Tokens for BM25 in Chinese and English, and the normalised form of a question for exact FAQ matches.

Chinese runs go through a word segmenter (rjieba when it is installed, else jieba), English words
are lower-cased, stop words dropped and lightly stemmed; mixed text ("我的order没到") is split into
runs of each script first, so that neither segmenter sees the other language.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["normalise_question", "normalised_text", "tokenize"]

# Runs of Han characters, or of Latin letters and digits (with inner apostrophes, "don't").
_RUN = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)|([a-z0-9]+(?:'[a-z]+)*)")
_WORD_CHARACTER = re.compile(r"\w", re.UNICODE)

# Measured on the retrieval bench (docs/benchmarks.md, "Tokeniser variants"): precise and search
# mode rank alike (tuning questions: hit@1 0.85 / 0.84, hit@3 0.94 / 0.95); search mode also yields
# the short words inside long ones (售后服务 → 售后, 服务, 售后服务), so a customer's shorter word
# still meets an article's longer one. Kept as a switch for the bench.
SEARCH_MODE = True
# English stemming, measured the same way: "plural" (returns → return), "light" (also -ing and -ed:
# shipping → ship) and "none" gave hit@3 0.95, 0.93 and 0.95 on the tuning questions: light stemming
# conflates a battery "charging" with being "charged" twice; plurals only joins "return" and
# "returns", "invoice" and "invoices", which content not written with the code will mix.
ENGLISH_STEMMING = "plural"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


ENGLISH_STOP_WORDS = _words(
    """a an the and or but if of to in on at by for with from as is are was were be been being am do
    does did doing have has had having i me my mine we our you your he she it its they them their this
    that these those there here what which who whom whose when where why how can could should would
    will shall may might must not no so than too very just also please hi hello thanks thank any some
    into about up out over then get got im i'm ive i've it's dont don't cant can't wont won't"""
)
# Function words and particles that say nothing about the topic of a question.
CHINESE_STOP_WORDS = _words(
    """的 了 吗 呢 吧 啊 呀 哦 嗯 么 着 过 是 在 和 与 及 或 就 都 也 还 又 很 我 你 您 他 她 它 我们 你们
    他们 这 那 这个 那个 一下 请问 请 想 要 能 可以 怎么 怎么办 怎样 如何 什么 为什么 哪里 哪 吗？ 有 没 没有
    一个 个 把 被 让 给 对 从 到 会 得 地 啊 哈 谢谢 你好 您好"""
)

# Words of a shop's customer service that jieba's general dictionary cuts in two ("到账" → 到 / 账).
DOMAIN_WORDS = _words(
    """到账 退货 退款 换货 发货 收货 签收 拒收 运费 包邮 快递 物流 快递单号 订单号 收货地址
    优惠券 优惠码 满减 积分 会员 售后 保修 质保 七天无理由 电子发票 纸质发票 增值税专用发票
    普通发票 开票 发票抬头 税号 支付宝 微信支付 花呗 分期 银行卡 验证码 登录 注册 注销 闪退 卡顿
    缓存 实名认证"""
)

_segmenter_lock = threading.Lock()
_segment: Callable[[str], Iterable[str]] | None = None


def _segmenter() -> Callable[[str], Iterable[str]]:
    """The Chinese segmenter, made once per process on first use (jieba's dictionary takes ~0.7 s)."""
    global _segment
    if _segment is not None:
        return _segment
    with _segmenter_lock:
        if _segment is None:
            _segment = _make_segmenter()
    return _segment


def _make_segmenter() -> Callable[[str], Iterable[str]]:
    try:
        import rjieba

        rust_cut: Any = rjieba.cut_for_search if SEARCH_MODE else rjieba.cut
        # rjieba has no user dictionary: its own dictionary is the same as jieba's.
        return lambda text: rust_cut(text)
    except ImportError:
        pass
    import jieba

    # jieba prints "Building prefix dict..." on the root logger's level otherwise.
    jieba.setLogLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    for word in DOMAIN_WORDS:
        tokenizer.add_word(word)
    if SEARCH_MODE:
        return lambda text: tokenizer.cut_for_search(text, HMM=True)
    return lambda text: tokenizer.cut(text, HMM=True)


def normalised_text(text: str) -> str:
    """NFKC (full-width letters and digits become ASCII) and lower case."""
    return unicodedata.normalize("NFKC", text).lower()


def stem(word: str) -> str:
    """A light English stemmer: plurals, -ing, -ed and a few suffixes ("returns", "returned" → "return")."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, replacement in (
        ("ies", "y"),
        ("sses", "ss"),
        ("ied", "y"),
        ("ing", ""),
        ("ed", ""),
        ("es", "e"),
        ("s", ""),
    ):
        if not word.endswith(suffix) or len(word) - len(suffix) < 3:
            continue
        if suffix == "s" and word.endswith(("ss", "us", "is")):
            return word
        word = word[: -len(suffix)] + replacement
        # "shipping" → "shipp" → "ship", but "installed" stays "install".
        if suffix in {"ing", "ed"} and word[-1] == word[-2] and word[-1] not in "lsz":
            word = word[:-1]
        break
    return word


def plural_stem(word: str) -> str:
    """Plurals only: "returns" → "return", "policies" → "policy", "boxes" → "box"; "glass" stays."""
    if len(word) <= 3 or not word.isalpha() or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def tokenize(text: str) -> list[str]:
    """BM25 tokens of `text`: Chinese words from the segmenter, English words stemmed, stop words gone."""
    tokens: list[str] = []
    for match in _RUN.finditer(normalised_text(text)):
        chinese, latin = match.group(1), match.group(2)
        if chinese:
            for word in _segmenter()(chinese):
                if word and word not in CHINESE_STOP_WORDS and _WORD_CHARACTER.search(word):
                    tokens.append(word)
        elif latin and latin not in ENGLISH_STOP_WORDS:
            word = latin.replace("'", "")
            if ENGLISH_STEMMING == "plural":
                word = plural_stem(word)
            elif ENGLISH_STEMMING == "light":
                word = stem(word)
            tokens.append(word)
    return tokens


def normalise_question(text: str) -> str:
    """A question as letters and digits only, lower case: a quick-entry click equals its entry."""
    return "".join(character for character in normalised_text(text) if character.isalnum())
