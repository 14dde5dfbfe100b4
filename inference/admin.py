from typing import Any

from django import forms
from django.contrib import admin

from conversations.models import Conversation
from inference.models import AssistantProfile


class AssistantProfileForm(forms.ModelForm):
    """The profile's form: the model's answer languages as checkboxes rather than raw JSON."""

    model_answer_locales = forms.MultipleChoiceField(
        choices=Conversation.Locale.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Model answers in",
        help_text=AssistantProfile._meta.get_field("model_answer_locales").help_text,
    )

    class Meta:
        model = AssistantProfile
        fields = [
            "name",
            "system_instructions",
            "language_policy",
            "model_answer_locales",
            "temperature",
            "max_tokens",
            "is_active",
        ]

    def clean_model_answer_locales(self) -> list[str]:
        # In the order of the choices, whatever order the boxes were ticked in: one stored form per set.
        chosen: Any = self.cleaned_data["model_answer_locales"]
        return [locale for locale, _ in Conversation.Locale.choices if locale in chosen]


@admin.register(AssistantProfile)
class AssistantProfileAdmin(admin.ModelAdmin):
    form = AssistantProfileForm
    list_display = (
        "name",
        "is_active",
        "language_policy",
        "model_answer_locales",
        "temperature",
        "max_tokens",
        "updated_at",
    )
    list_filter = ("is_active", "language_policy")
    search_fields = ("name", "system_instructions")
