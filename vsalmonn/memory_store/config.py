"""The memory's settings: one validated, immutable model shared by the TTT layer, the bank and the reader."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Policy = Literal["merge", "discard", "fifo", "uniform", "whole"]
Modality = Literal["visual", "audio"]
# "hf_cg": TTT_HF as the paper defines it (unweighted G, the official φ rule, a step scale), the default since
# the needle benchmark chose it (issue 17); "hf_cg_newton": the earlier solver (η-weighted G, a full
# Gauss-Newton step), which carried the name "hf_cg" before. "hf_cg_paper", the paper's solver's name before,
# is read as "hf_cg"; stored configs from before the rename are read by `saved_fields`. docs/memory.md.
Optimizer = Literal["gd", "hf_cg", "hf_cg_newton"]
OPTIMIZER_ALIASES = {"hf_cg_paper": "hf_cg"}
# The layer options of issue 17 (docs/memory.md): each default is the layer as it was before them, which the
# shipped θ and saved states were made with; the benchmark decides the defaults later.
LongSpanTarget = Literal["value", "mapped"]
InnerGelu = Literal["exact", "tanh"]


# Upper bounds of the budgets: a bank of 2^20 slots at d=384 in float32 is 1.6 GB per bank and per stream,
# far beyond any configuration that fits the design's budgets; 10^9 (a typo, or a unit mistake) would ask for
# terabytes and fail deep inside torch instead of here with the key's name.
MAX_SLOTS = 1 << 20
MAX_READER_SLOTS = 4096
# hf_cg's default step scale; bench/cg_step.py (`vsalmonn bench cg_step`) measured it (docs/memory.md).
CG_STEP_SCALE = 4096.0


class TTTConfig(BaseModel):
    """What shapes the TTT layer (`memory_store.ttt`): the part of :class:`MemoryConfig` it reads.

    MemoryConfig extends this model, so each field, its default and its bounds are written once; the layer
    takes this narrower view so that it can be built (in tests, benchmarks, training) without bank settings.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dim: int = Field(384, gt=0, le=8192, description="token width d, shared by every modality")
    heads: int = Field(8, gt=0, le=1024, description="TTT heads H; each has width p = dim / heads")
    mlp_ratio: int = Field(
        4,
        gt=0,
        le=64,
        description="hidden width m of each head's fast MLP, as a multiple of p (the paper's release: 1)",
    )
    inner_gelu: InnerGelu = Field(
        "exact", description="GELU of the fast MLP: 'exact' (erf) or 'tanh' (the paper's release)"
    )
    mini_batch: int = Field(1024, gt=0, le=MAX_SLOTS, description="tokens per TTT update")
    eta_base: float = Field(0.1, gt=0, description="base inner learning rate η_base")
    long_span_lag: int = Field(
        1024, ge=0, description="lag Δ of the long-span term in tokens; 0 turns it off"
    )
    long_span_weight: float = Field(0.1, ge=0, description="weight λ of the long-span term")
    long_span_target: LongSpanTarget = Field(
        "value",
        description="'value': fit v'_{i-Δ}; 'mapped': fit k_i + LN(lag_map(x_{i-Δ}) − K_lag(x_i)), the "
        "paper's, with two slow maps of its own",
    )
    target_ln_affine: bool = Field(
        False, description="learned γ, β on the reconstruction target's LayerNorm (init 1, 0)"
    )
    rope: bool = Field(False, description="rotate q and k by stream time (RoPE) after their l2 norm")
    rope_regions: bool = Field(
        False,
        description="3-D RoPE: a quarter of the channel pairs each turn with the token's region row and "
        "column instead of time (needs rope)",
    )
    rope_base: float = Field(
        10000.0, gt=1, description="RoPE: channel pair j turns at rope_base^(-2j/p) radians per rope_unit_s"
    )
    rope_unit_s: float = Field(1.0, gt=0, description="RoPE: seconds of stream time per unit of position")
    value_time_code: float = Field(
        0.0,
        ge=0,
        description="weight of a unit time code (RoPE's frequencies, as cos/sin pairs) added to each value v "
        "before its target, so the fast weights also answer 'when'; 0 turns it off",
    )
    optimizer: Optimizer = Field("hf_cg", description="inner optimiser of the fast weights")
    cg_max_iter: int = Field(4, gt=0, description="conjugate-gradient iterations at most per update")
    cg_tol: float = Field(
        1e-3,
        ge=0,
        description="hf_cg_newton only: a head's CG stops once φ grows by less than this fraction in one "
        "iteration",
    )
    cg_stop_fraction: float = Field(
        0.75, gt=0, le=1, description="the whole CG stops once this fraction of heads have stopped"
    )
    cg_step_scale: float = Field(
        CG_STEP_SCALE,
        gt=0,
        description="hf_cg only: W ← W − s·Δ; s = 1 is the paper's literal step, inert at our sizes "
        "(docs/memory.md)",
    )
    gate_init: float = Field(0.1, description="initial value of the read-out gate α (per channel)")
    seed: int = Field(0, description="seed of the slow weights' initialisation")

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_alias(cls, value: object) -> object:
        """Settings files and configs written before the rename may name the paper's solver hf_cg_paper."""
        return OPTIMIZER_ALIASES.get(value, value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> Self:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.rope_regions and not self.rope:
            raise ValueError("rope_regions turns part of RoPE by region: it needs rope = true")
        if (self.rope or self.value_time_code) and self.head_dim % 2:
            raise ValueError(f"rope and the time code use channel pairs: head width {self.head_dim} is odd")
        return self

    @property
    def uses_times(self) -> bool:
        """Whether the layer reads the tokens' stream times (RoPE or the time code)."""
        return self.rope or self.value_time_code > 0

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def hidden(self) -> int:
        """Hidden width m of each head's fast MLP."""
        return self.head_dim * self.mlp_ratio


class MemoryConfig(TTTConfig):
    """Everything that shapes one stream's memory.

    Defaults follow the paper where it names a value (16,384 visual and 4,096 audio slots, mini-batches
    of 1,024 tokens, η_base 0.1, λ 0.1) and DESIGN §3 elsewhere. The config is frozen because a checkpoint
    is only meaningful together with the config that produced it. The TTT layer's fields come from
    :class:`TTTConfig`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    visual_slots: int = Field(16384, gt=0, le=MAX_SLOTS, description="budget M of the visual bank")
    audio_slots: int = Field(4096, gt=0, le=MAX_SLOTS, description="budget M_a of the audio bank")
    policy: Policy = Field("merge", description="how the visual bank reduces when it would overflow")
    audio_policy: Policy = Field("merge", description="how the audio bank reduces (the paper: merge)")
    audio_merge_balance: float = Field(
        1.0,
        ge=0,
        description="audio merge/whole: a slot of c tokens counts log2(c) times this as less similar to "
        "the next sentence, so a run of alike sentences is not averaged into one slot (0: the paper's merge; "
        "docs/memory.md)",
    )
    slot_members: int = Field(
        2,
        ge=1,
        le=64,
        description="policy 'whole': tokens each slot keeps whole beside its merged vector; the reader "
        "scores a slot by its best one",
    )
    ttt: bool = Field(True, description="rewrite visual tokens with the TTT layer before they enter the bank")
    reader_visual_slots: int = Field(
        32, gt=0, le=MAX_READER_SLOTS, description="visual slots B the reader keeps per prompt"
    )
    reader_audio_slots: int = Field(
        16, gt=0, le=MAX_READER_SLOTS, description="audio slots B_a the reader keeps per prompt"
    )
    reader_join_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="adjacent selected slots form one moment unless the weaker scores below this share "
        "of the stronger",
    )
    reader_join_gap_s: float = Field(
        2.0, ge=0, description="adjacent selected slots further apart in time than this are separate moments"
    )
    reader_join_touching: bool = Field(
        True,
        description="moments whose spans touch and whose scores are similar (reader_join_ratio) become one, "
        "even when a weak slot parted them (a frame's tokens are several slots of one span)",
    )
    slow_weights: str = Field(
        "default",
        description="the slow weights θ a fresh memory starts from: 'default' (the shipped trained θ when it "
        "fits `encoders` and the sizes, else untrained), 'untrained', or the path of a .safetensors file",
    )
    encoders: str = Field(
        "efficientnet-lite0/minilm",
        description="the vision and text encoders whose tokens this memory holds (vision/text); trained "
        "slow weights must have been trained for them",
    )
    device: str = Field("cpu", description="torch device of the TTT layer and the banks")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="dtype of tokens and fast weights")


class RetentionPolicy(BaseModel):
    """Which committed checkpoints of a stream to keep; the newest is always kept.

    At most `keep_last`; of those, the ones older than `max_age_s` go, and then the oldest go while the
    stream's checkpoints take more than `max_bytes` on disk.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep_last: int = Field(3, ge=1, description="the newest K checkpoints of a stream are candidates to keep")
    max_age_s: float | None = Field(None, gt=0, description="drop checkpoints older than this (seconds)")
    max_bytes: int | None = Field(None, gt=0, description="drop the oldest while a stream's total is above")


DAY_S = 86_400.0
MB = 1_000_000


class KindRetention(BaseModel):
    """How long, and how much of, one kind of a stream's stored data is kept; 0 means unlimited.

    Age is wall time (a row's `created_at`, a file's mtime) except for frame labels and on-screen text, which
    have only stream time: they are aged against the stream's newest row of their kind. Bytes are per stream,
    estimated as `memory_store.retention` explains; the oldest go first while a stream's total is above
    `max_bytes`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_age_s: float = Field(
        30 * DAY_S, ge=0, description="drop what is older than this (seconds); 0: no limit"
    )
    max_bytes: int = Field(256 * MB, ge=0, description="per stream: drop the oldest while above; 0: no limit")


class DataRetention(BaseModel):
    """Retention of everything a stream stores besides its checkpoints (`memory_store.retention`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_s: float = Field(
        3600.0, ge=0, description="apply at most this often, after a committed checkpoint; 0: after every one"
    )
    batch_rows: int = Field(
        5000, gt=0, le=100_000, description="rows deleted per transaction, so no delete holds the lock long"
    )
    labels: KindRetention = Field(default_factory=lambda: KindRetention(max_bytes=256 * MB))
    transcript: KindRetention = Field(default_factory=lambda: KindRetention(max_bytes=128 * MB))
    events: KindRetention = Field(default_factory=lambda: KindRetention(max_bytes=64 * MB))
    screen_text: KindRetention = Field(default_factory=lambda: KindRetention(max_bytes=64 * MB))
    thumbnails: KindRetention = Field(default_factory=lambda: KindRetention(max_bytes=512 * MB))
    transcript_files: KindRetention = Field(default_factory=lambda: KindRetention(max_bytes=64 * MB))

    def kind(self, name: str) -> KindRetention:
        rule: KindRetention = getattr(self, name)
        return rule


class S3Options(BaseModel):
    """How to reach an S3-compatible object store for ``checkpoints_url = "s3://bucket/prefix"``.

    Every value left unset falls back to the usual AWS_* environment variables (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, AWS_REGION, ...). The timeouts and retries bound how long a
    checkpoint write may hang on a dead endpoint before it fails with one line: a failed write costs nothing
    but the work since the last commit, a hung one stalls the stream.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = Field(
        None, description="e.g. http://minio:9000; unset: AWS_ENDPOINT_URL, else Amazon S3 of `region`"
    )
    region: str | None = Field(None, description="unset: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1")
    access_key_id: SecretStr | None = Field(
        None, description="set it as VSALMONN_STORE__S3__ACCESS_KEY_ID; unset: AWS_ACCESS_KEY_ID"
    )
    secret_access_key: SecretStr | None = Field(
        None, description="set it as VSALMONN_STORE__S3__SECRET_ACCESS_KEY; unset: AWS_SECRET_ACCESS_KEY"
    )
    session_token: SecretStr | None = Field(None, description="temporary credentials' token, if any")
    connect_timeout_s: float = Field(5.0, gt=0, description="connecting to the endpoint, per attempt")
    request_timeout_s: float = Field(60.0, gt=0, description="one request (a chunk is ≤ 6.3 MB), per attempt")
    max_retries: int = Field(3, ge=0, le=20, description="retries of a failed request")
    retry_timeout_s: float = Field(
        20.0, gt=0, description="no retry starts this long after a request's first attempt"
    )


CHECKPOINT_SCHEMES = ("file", "s3")


class StoreConfig(BaseModel):
    """Where and how memories persist (DESIGN §4)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    catalog_url: str | None = Field(
        None, description="SQLAlchemy URL of the catalog; default sqlite:///<data>/catalog.sqlite"
    )
    catalog_password: SecretStr | None = Field(
        None,
        description="the catalog database's password, kept out of catalog_url (and so out of the TOML file): "
        "set it as VSALMONN_STORE__CATALOG_PASSWORD",
    )
    busy_timeout_s: float = Field(30.0, gt=0, description="how long SQLite waits for a lock before failing")
    checkpoints_url: str | None = Field(
        None,
        description="where checkpoint groups live: a folder (a path or file:///path) or an S3-compatible "
        "object store (s3://bucket/prefix, see [store.s3]); default <data>/memory",
    )
    s3: S3Options = Field(
        default_factory=S3Options, description="the object store of an s3:// checkpoints_url"
    )
    gc_grace_s: float = Field(
        3600.0,
        gt=0,
        description="object stores: garbage collection leaves a group without a row alone until its newest "
        "object is this old, and a writer whose group took half of this to write does not commit it",
    )
    retention: RetentionPolicy = Field(default_factory=RetentionPolicy)
    data_retention: DataRetention = Field(
        default_factory=DataRetention, description="labels, transcripts, events and files: age and bytes"
    )

    @field_validator("checkpoints_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("checkpoints_url is empty")
        if "://" in value:
            scheme, rest = value.split("://", 1)
            if scheme.lower() not in CHECKPOINT_SCHEMES:
                raise ValueError(
                    f"checkpoints_url: scheme {scheme!r} is not one of {', '.join(CHECKPOINT_SCHEMES)}"
                )
            if scheme.lower() == "s3" and not rest.split("/", 1)[0]:
                raise ValueError("checkpoints_url: s3:// needs a bucket (s3://bucket/prefix)")
        return value

    def catalog_target(self) -> str | None:
        """`catalog_url` with `catalog_password` put in, as the database driver needs it; None: the default.

        A password in the URL itself still works; a separate one wins over it, so a deployment can keep the
        URL in its settings file and the password in the service's environment."""
        if self.catalog_url is None or self.catalog_password is None:
            return self.catalog_url
        # imported here: every command reads the settings, and most never open a catalog
        from sqlalchemy.engine import make_url

        url = make_url(self.catalog_url).set(password=self.catalog_password.get_secret_value())
        return url.render_as_string(hide_password=False)


# What each field added after the first saved states meant before it existed. A state, checkpoint or catalog
# row written before a field lacks it, and was made with this value whatever today's default is; reading it
# with today's defaults instead would silently turn options on for memories made without them.
LEGACY_FIELDS: dict[str, object] = {
    "mlp_ratio": 4,
    "inner_gelu": "exact",
    "long_span_target": "value",
    "target_ln_affine": False,
    "rope": False,
    "rope_regions": False,
    "value_time_code": 0.0,
    "cg_step_scale": CG_STEP_SCALE,
    "slot_members": 2,
    "audio_merge_balance": 0.0,
}


# The field added in the release that gave the name "hf_cg" to the paper's solver: a stored config without it
# was written before, when "hf_cg" named the solver now called "hf_cg_newton".
RENAMED_HF_CG_WITH = "rope_regions"


def saved_optimizer(fields: dict[str, object]) -> object:
    """The optimiser a stored config's `optimizer` means today (its own value when it names none)."""
    value = fields.get("optimizer")
    if not isinstance(value, str):
        return value
    if value == "hf_cg" and RENAMED_HF_CG_WITH not in fields:
        return "hf_cg_newton"
    return OPTIMIZER_ALIASES.get(value, value)


def saved_fields(fields: dict[str, object]) -> dict[str, object]:
    """A stored config's fields with the ones it predates filled in as they were (`LEGACY_FIELDS`) and its
    optimiser under today's name (`saved_optimizer`)."""
    out = {**{k: v for k, v in LEGACY_FIELDS.items() if k in MemoryConfig.model_fields}, **fields}
    if "optimizer" in fields:
        out["optimizer"] = saved_optimizer(fields)
    return out


def saved_config(fields: dict[str, object]) -> MemoryConfig:
    """The MemoryConfig a stored config (a checkpoint's, a catalog row's) was made with."""
    return MemoryConfig(**saved_fields(fields))  # type: ignore[arg-type]
