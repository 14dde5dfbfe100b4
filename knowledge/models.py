"""The company's knowledge: articles and frequently asked questions, and the index built from them.

Articles and FAQ entries are what supervisors edit. Chunks, their vectors and index builds are
derived: a task rebuilds them when content changes (knowledge/tasks.py), never a request.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class Locale(models.TextChoices):
    ZH_HANS = "zh-Hans", "简体中文"
    EN = "en", "English"


class Article(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"

    # The article's address (/kb/<slug>/) and its file name on import and export (<slug>.md).
    slug = models.SlugField(max_length=120, unique=True)
    title = models.CharField(max_length=200)
    body = models.TextField(help_text="Markdown. Sections start with ## headings; each is cited on its own.")
    locale = models.CharField(max_length=8, choices=Locale.choices, default=Locale.EN)
    tags = models.CharField(max_length=300, blank=True, help_text="Comma-separated.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True)
    # Counts saved versions: 1 for a new article, one more for every saved change.
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    @property
    def tag_list(self) -> list[str]:
        return [tag.strip() for tag in self.tags.split(",") if tag.strip()]


class ArticleVersion(models.Model):
    """An article as it was saved once; the newest one equals the article. Restoring saves a new one."""

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    body = models.TextField()
    locale = models.CharField(max_length=8, choices=Locale.choices)
    tags = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=16, choices=Article.Status.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["article", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["article", "number"], name="article_version_number_unique")
        ]

    def __str__(self) -> str:
        # Admin shows it above each row of the article's versions.
        return f"Version {self.number}"


class FaqEntry(models.Model):
    question = models.CharField(max_length=200)
    answer = models.TextField(help_text="Markdown.")
    locale = models.CharField(max_length=8, choices=Locale.choices, default=Locale.EN)
    is_quick_entry = models.BooleanField(
        default=False, help_text="Shown beside the chat as a question the customer can ask in one click."
    )
    position = models.PositiveSmallIntegerField(default=0)
    is_published = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["position", "question"]
        verbose_name = "FAQ entry"
        verbose_name_plural = "FAQ entries"

    def __str__(self) -> str:
        return self.question


class RetrievalSettings(models.Model):
    """The one row of retrieval settings supervisors tune in admin (pk 1; defaults when absent)."""

    faq_match_threshold = models.FloatField(
        default=0.80,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="How close a question must be to an FAQ entry (0–1) to be answered from it at once.",
    )
    relevance_threshold = models.FloatField(
        default=0.30,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=(
            "Below this score (0–1) nothing in the knowledge base is relevant: the reply offers a person."
        ),
    )
    sources_per_reply = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    any_language = models.BooleanField(
        default=False, help_text="Use articles in any language, not only the conversation's."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "retrieval settings"
        verbose_name_plural = "retrieval settings"

    def __str__(self) -> str:
        return "Retrieval settings"


class Chunk(models.Model):
    """A section of a published article, as retrieval finds and cites it."""

    article = models.ForeignKey(Article, on_delete=models.CASCADE, related_name="chunks")
    # The article version the chunk was cut from: a chunk of an older version is stale.
    article_version = models.PositiveIntegerField()
    position = models.PositiveIntegerField()
    heading = models.CharField(max_length=300, blank=True)
    # The id of the heading on the article's page (/kb/<slug>/#<anchor>); blank for the lead.
    anchor = models.CharField(max_length=300, blank=True)
    text = models.TextField()
    locale = models.CharField(max_length=8, choices=Locale.choices)

    class Meta:
        ordering = ["article", "position"]
        constraints = [models.UniqueConstraint(fields=["article", "position"], name="chunk_position_unique")]

    def __str__(self) -> str:
        return f"{self.article_id}#{self.anchor or self.position}"


class Embedding(models.Model):
    """A vector of a chunk or of an FAQ question, with the model that made it; made again when it changes."""

    chunk = models.ForeignKey(
        Chunk, null=True, blank=True, on_delete=models.CASCADE, related_name="embeddings"
    )
    faq_entry = models.ForeignKey(
        FaqEntry, null=True, blank=True, on_delete=models.CASCADE, related_name="embeddings"
    )
    # A hash of the embedded text: an FAQ question edited since is embedded again.
    text_sha256 = models.CharField(max_length=64)
    model_name = models.CharField(max_length=200)
    dimension = models.PositiveIntegerField()
    # float32, little-endian, `dimension` of them, L2-normalised.
    vector = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(chunk__isnull=False, faq_entry__isnull=True)
                | Q(chunk__isnull=True, faq_entry__isnull=False),
                name="embedding_of_chunk_or_faq_entry",
            ),
            models.UniqueConstraint(
                fields=["chunk", "model_name"], condition=Q(chunk__isnull=False), name="embedding_chunk_model"
            ),
            models.UniqueConstraint(
                fields=["faq_entry", "model_name"],
                condition=Q(faq_entry__isnull=False),
                name="embedding_faq_entry_model",
            ),
        ]

    def __str__(self) -> str:
        owner = f"chunk {self.chunk_id}" if self.chunk_id else f"FAQ entry {self.faq_entry_id}"
        return f"{owner} by {self.model_name} ({self.dimension})"


class IndexBuild(models.Model):
    """One version of the search index; each process serves the newest ready build, reloading on a new one."""

    class Status(models.TextChoices):
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BUILDING, db_index=True)
    embedder_model = models.CharField(max_length=200)
    dimension = models.PositiveIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    faq_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Index build {self.pk} ({self.status})"
