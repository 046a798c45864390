"""A web demo of a CogView model (gradio): text to image with a row-by-row preview, captioning with scores,
super-resolution with a super-resolution model (the bundled one by default), and the model's facts. Serves the
bundled digits models on CPU by default, at http://127.0.0.1:7860.

API (gradio_client): `Client(url).predict("a handwritten digit 7", api_name="/generate")` returns a gallery of
images; `/caption` takes an image and returns captions with their scores; `/super_resolve` takes an image and returns
it at twice the size."""

import argparse
import os
import queue
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry or version check

import gradio as gr  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402
from transformers import pipeline  # noqa: E402

from modeling_cogview import CogViewForCausalLM  # noqa: E402
from modeling_cogview.generation_cogview import RELEASE_CAPTION_LENGTH, DrawingDefaults, sampling_seed  # noqa: E402
from processing_cogview import CogViewProcessor  # noqa: E402

from ..hardware import BUNDLED_MODEL, DTYPES, add_model_argument, bundled_model_folder  # noqa: E402
from ..images import enlarge, image_grid  # noqa: E402


MAX_PROMPT_CHARS = 300  # checked before tokenizing; the token budget of the model is checked after
MAX_IMAGES = 8
MAX_CANDIDATES = 16
GUIDANCE_RANGE = (1.0, 10.0)  # 1 = no classifier-free guidance
TEMPERATURE_RANGE = (0.05, 2.0)
MAX_SEED = 2**31 - 1
MAX_CAPTIONS = 8
MAX_CAPTION_TOKENS = RELEASE_CAPTION_LENGTH
DISPLAY_SIDE = 128  # small images are enlarged by a whole factor (nearest neighbour) so their pixels stay exact
BUNDLED_SR_MODEL = BUNDLED_MODEL.with_name("cogview-digits-sr")
PAGE_CSS = (
    "#preview img, #gallery img { image-rendering: pixelated; }"  # the browser keeps them sharp too
    "#gallery .grid-wrap { min-height: 0; height: auto; }"  # as tall as its rows, not a fixed 450 px
)

EXAMPLE_PROMPTS = ["a handwritten digit 7", "the digit 3", "手写数字8", "数字2"]


# Requests and their checks: every message is meant for the person at the page


@dataclass(frozen=True)
class DrawRequest:
    prompt: str
    num_images: int
    seed: int
    guidance_scale: float
    candidates: int
    top_k: int  # 0 = off
    temperature: float


def whole_number(value, name: str, low: int, high: int) -> int:
    """A whole number in [low, high] from what a page or client sent (sliders may send floats)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not number.is_integer() or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value}")
    return int(number)


def number_in(value, name: str, low: float, high: float, low_note: str = "") -> float:
    """A number in [low, high] from what a page or client sent."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not low <= number <= high:  # NaN fails this too
        raise ValueError(f"{name} must lie from {low:g}{low_note} to {high:g}, got {value}")
    return number


# The model behind the page, with no gradio in it (the tests call it directly too)


class CogViewDemo:
    """A model folder's model and processor behind a lock: checked requests in, PIL images or captions out."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32, sr_model_dir: str | Path | None = None):
        self.model_dir = Path(model_dir)
        self.device = torch.device(device)
        self.model = CogViewForCausalLM.from_pretrained(self.model_dir, dtype=dtype).to(self.device).eval()
        self.processor = CogViewProcessor.from_pretrained(self.model_dir)
        self.draw_pipeline = pipeline("text-to-image", model=self.model, processor=self.processor)
        self.lock = threading.Lock()  # one generation at a time: the model is shared
        config = self.model.config
        self.grid_size = config.image_grid_size
        self.num_image_tokens = config.num_image_tokens
        self.max_top_k = config.image_vocab_size
        # a text-to-image prompt is [ROI1] text [BASE] [BOI1] image: what is left of the positions is for the text
        self.max_prompt_tokens = config.max_position_embeddings - 3 - self.num_image_tokens
        # the controls start where the model's generation_config is (guidance, top-k, temperature, candidates)
        self.defaults = DrawingDefaults.from_generation_config(self.model.generation_config)
        self.sr_pipeline = None  # the super-resolution tab's model, when there is one
        if sr_model_dir is not None:
            sr_model = CogViewForCausalLM.from_pretrained(sr_model_dir, dtype=dtype).to(self.device).eval()
            self.sr_pipeline = pipeline("image-to-image", model=sr_model, processor=CogViewProcessor.from_pretrained(sr_model_dir))

    # text to image

    def check_draw_request(self, prompt, num_images, seed, guidance_scale, candidates, top_k=None, temperature=None) -> DrawRequest:
        """Raises ValueError, with what to change, for anything the page or an API client may send (top-k and
        temperature left out take the model's defaults)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("Enter a prompt, for example “a handwritten digit 7”.")
        prompt = prompt.strip()
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"The prompt is too long: {len(prompt)} characters, at most {MAX_PROMPT_CHARS}.")
        tokens = self.prompt_token_count(prompt)
        if tokens > self.max_prompt_tokens:
            raise ValueError(
                f"The prompt is too long for this model: {tokens} tokens, at most {self.max_prompt_tokens}."
            )
        return DrawRequest(
            prompt=prompt,
            num_images=whole_number(num_images, "number of images", 1, MAX_IMAGES),
            seed=whole_number(seed, "seed", 0, MAX_SEED),
            guidance_scale=number_in(guidance_scale, "guidance", *GUIDANCE_RANGE, low_note=" (off)"),
            candidates=whole_number(candidates, "candidates", 1, MAX_CANDIDATES),
            top_k=whole_number(self.defaults.top_k or 0 if top_k is None else top_k, "top-k", 0, self.max_top_k),
            temperature=number_in(self.defaults.temperature if temperature is None else temperature, "temperature", *TEMPERATURE_RANGE),
        )

    def prompt_token_count(self, prompt: str) -> int:
        """Text tokens as the processor reads user text (command-token names escaped: plain characters)."""
        return len(self.processor.encode_text(prompt))

    def draw(self, request: DrawRequest, on_row: Callable[[torch.LongTensor], None] | None = None) -> list[PIL.Image.Image]:
        """`num_images` images, each the best of `candidates` samples by the model's self-reranking, drawn by the
        text-to-image pipeline; `on_row(codes_so_far)` after every grid row ([images * candidates, rows * side])."""
        with self.lock:
            drawn = self.draw_pipeline(
                request.prompt,
                num_images_per_prompt=request.num_images,
                seed=request.seed,
                guidance_scale=request.guidance_scale,
                top_k=request.top_k,
                temperature=request.temperature,
                rerank_candidates=request.candidates,
                progress_bar=False,
                preview_callback=on_row,
                preview_every_rows=1,
            )
        return [enlarge(output["image"], DISPLAY_SIDE) for output in drawn]

    def preview(self, codes_so_far: torch.LongTensor, candidates: int) -> PIL.Image.Image:
        """The first candidate of each image, its finished rows decoded and the rest left gray, side by side."""
        firsts = codes_so_far[::candidates]
        rows_done = firsts.shape[1] // self.grid_size
        padded = torch.zeros(firsts.shape[0], self.num_image_tokens, dtype=torch.long)
        padded[:, : firsts.shape[1]] = firsts
        with torch.no_grad():
            pixels = self.model.decode_image_tokens(padded.to(self.device))
        images = self.processor.postprocess(pixels)
        side = images[0].height
        drawn_height = side * rows_done // self.grid_size
        for image in images:  # the rows not generated yet: gray, not whatever code 0 decodes to
            image.paste((200, 200, 200), (0, drawn_height, side, side))
        return image_grid(images, columns=len(images), min_side=DISPLAY_SIDE)

    # captioning

    def caption(self, image, num_captions=4, caption_tokens=None, seed=0) -> list[tuple[str, float]]:
        """Sampled captions of `image`, each once, best first, with the model's score: the sum of the caption's
        token log-probabilities given the image (the self-reranking score; higher is better)."""
        if image is None:
            raise ValueError("Upload an image to caption first.")
        num_captions = whole_number(num_captions, "number of captions", 1, MAX_CAPTIONS)
        if caption_tokens is None:
            caption_tokens = self.control_defaults()["caption_tokens"]
        caption_tokens = whole_number(caption_tokens, "caption length", 1, MAX_CAPTION_TOKENS)
        seed = whole_number(seed, "seed", 0, MAX_SEED)
        with self.lock:
            inputs = self.processor(images=image).to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            with sampling_seed(seed, self.device):
                sequences = self.model.generate(
                    **inputs, num_return_sequences=num_captions, max_new_tokens=caption_tokens, progress_bar=False
                )
            captions = list(dict.fromkeys(self.processor.decode_caption(sequence).strip() for sequence in sequences))
            captions = [caption for caption in captions if caption]
            if not captions:
                return []
            scoring = self.processor(images=[image] * len(captions), text=captions).to(self.device)
            scoring["pixel_values"] = scoring["pixel_values"].to(self.model.dtype)
            scores = self.model.caption_scores(**scoring).tolist()
        return sorted(zip(captions, scores), key=lambda pair: -pair[1])

    # super-resolution

    def super_resolve(self, image, prompt="", mode="magnify", seed=0) -> PIL.Image.Image:
        """`image` at twice the size by the super-resolution model (`magnify`: read at the model's size, doubled by
        the release's nine windows; `low-level`: read at half, drawn at full size)."""
        if self.sr_pipeline is None:
            raise ValueError("This demo runs without a super-resolution model (start it with --sr_model FOLDER).")
        if image is None:
            raise ValueError("Upload an image to double first.")
        if mode not in ("magnify", "low-level"):
            raise ValueError(f"mode must be magnify or low-level, got {mode!r}")
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"The caption must be text of at most {MAX_PROMPT_CHARS} characters.")
        seed = whole_number(seed, "seed", 0, MAX_SEED)
        with self.lock:
            return self.sr_pipeline(image, prompt=prompt.strip(), mode=mode, seed=seed, progress_bar=False)

    def control_defaults(self) -> dict[str, float]:
        """Where the page's controls start: the model's own defaults (`DrawingDefaults`), within the controls' ranges."""
        return {
            "guidance_scale": min(max(self.defaults.guidance_scale, GUIDANCE_RANGE[0]), GUIDANCE_RANGE[1]),
            "candidates": min(self.defaults.rerank_candidates, MAX_CANDIDATES),
            "top_k": min(self.defaults.top_k or 0, self.max_top_k),
            "temperature": min(max(self.defaults.temperature, TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1]),
            "caption_tokens": min(self.defaults.caption_length, MAX_CAPTION_TOKENS),
        }

    # facts

    def facts_markdown(self) -> str:
        config = self.model.config
        side = self.model.vqvae.config.downsample_factor * self.grid_size if self.model.vqvae is not None else None
        rows = [
            ("model", f"`{self.model_dir.name}`"),
            ("parameters", f"{self.model.num_parameters():,}"),
            (
                "layers × hidden × heads",
                f"{config.num_hidden_layers} × {config.hidden_size} × {config.num_attention_heads}",
            ),
            (
                "image",
                f"{side}×{side} px, a {self.grid_size}×{self.grid_size} grid of VQ-VAE codes" if side else "no VQ-VAE",
            ),
            (
                "vocabulary",
                f"{config.image_vocab_size} image codes + {config.text_vocab_size} text pieces + command tokens",
            ),
            ("prompt length", f"at most {self.max_prompt_tokens} text tokens"),
            ("sampling defaults", f"guidance {self.defaults.guidance_scale:g}, top-k {self.defaults.top_k or 'off'}, "
             f"temperature {self.defaults.temperature:g}, best of {self.defaults.rerank_candidates}"),
            ("device", f"{self.device} ({str(self.model.dtype).removeprefix('torch.')})"),
        ]
        return "| | |\n| --- | --- |\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)

    def card_markdown(self) -> str:
        card = self.model_dir / "README.md"
        if not card.is_file():
            return "This model folder has no card (README.md)."
        text = card.read_text(encoding="utf-8")
        return re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.DOTALL).strip()  # the YAML header is for the Hub


# The page


class DemoPage:
    """The gradio handlers around a `CogViewDemo`: checks become messages on the page (gr.Error), never tracebacks."""

    def __init__(self, demo: CogViewDemo):
        self.demo = demo
        self.grid_dir = tempfile.TemporaryDirectory(prefix="cogview-demo-")  # downloads live as long as the app

    def request(self, *values) -> DrawRequest:
        try:
            return self.demo.check_draw_request(*values)
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None

    def draw_with_preview(
        self, prompt, num_images, seed, guidance_scale, candidates, top_k, temperature, progress=gr.Progress()
    ) -> Iterator:
        """The page's Generate: yields (preview, gallery, grid download, status) as rows complete, then the result."""
        request = self.request(prompt, num_images, seed, guidance_scale, candidates, top_k, temperature)
        events: queue.Queue = queue.Queue()

        def work():
            try:
                events.put(("done", self.demo.draw(request, on_row=lambda codes: events.put(("row", codes)))))
            except Exception as error:  # handed to the page's thread, which reports it
                events.put(("error", error))

        threading.Thread(target=work, daemon=True).start()
        grid = self.demo.grid_size
        progress((0, grid), desc="image rows", unit="rows")
        yield None, None, gr.update(visible=False), "Waiting for the model…"
        while True:
            kind, payload = events.get()
            if kind == "row":
                rows = payload.shape[1] // grid
                progress((rows, grid), desc="image rows", unit="rows")
                yield self.demo.preview(payload, request.candidates), gr.skip(), gr.skip(), f"Drawing: row {rows} of {grid}"
            elif kind == "error":
                raise payload
            else:
                images = payload
                break
        grid_path = self.save_grid(images)
        status = f"{len(images)} image(s) of “{request.prompt}”, seed {request.seed}"
        if request.candidates > 1:
            status += f", each the best of {request.candidates} by self-reranking"
        yield gr.skip(), images, gr.update(value=grid_path, visible=True), status

    def draw_gallery(self, prompt, num_images, seed, guidance_scale, candidates, top_k, temperature) -> list[PIL.Image.Image]:
        """The `/generate` API: prompt (and options) in, a gallery of images out."""
        return self.demo.draw(self.request(prompt, num_images, seed, guidance_scale, candidates, top_k, temperature))

    def super_resolve(self, image, prompt, mode, seed) -> tuple[PIL.Image.Image, str]:
        """The `/super_resolve` API and the tab's button: the image in, the doubled image (shown enlarged) out."""
        try:
            doubled = self.demo.super_resolve(image, prompt, mode, seed)
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None
        return enlarge(doubled, 2 * DISPLAY_SIDE), f"{image.width}x{image.height} in, {doubled.width}x{doubled.height} out ({mode})"

    def caption(self, image, num_captions, caption_tokens, seed) -> list[list]:
        try:
            pairs = self.demo.caption(image, num_captions, caption_tokens, seed)
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None
        return [[caption, round(score, 3)] for caption, score in pairs]

    def save_grid(self, images: list[PIL.Image.Image]) -> str:
        handle = tempfile.NamedTemporaryFile(
            prefix="cogview-grid-", suffix=".png", dir=self.grid_dir.name, delete=False
        )
        with handle:
            image_grid(images, columns=4).save(handle, format="PNG")
        return handle.name


def build_app(demo: CogViewDemo) -> gr.Blocks:
    page = DemoPage(demo)
    start = demo.control_defaults()
    with gr.Blocks(title="CogView demo", analytics_enabled=False) as app:
        app.page = page  # keeps the download folder alive with the app
        gr.Markdown(
            f"# CogView: text to image\nA CogView model (`{demo.model_dir.name}`), running here on "
            f"{demo.device}. Your prompt is plain text: command tokens like `[BOI1]` in it are read as characters."
        )
        with gr.Tab("Text to image"):
            with gr.Row():
                with gr.Column(scale=2):
                    prompt = gr.Textbox(
                        label="Prompt",
                        value=EXAMPLE_PROMPTS[0],
                        max_lines=2,
                        max_length=MAX_PROMPT_CHARS,
                        elem_id="prompt",
                    )
                    gr.Examples(EXAMPLE_PROMPTS, inputs=prompt, label="Examples (English and Chinese)")
                    with gr.Row():
                        num_images = gr.Slider(
                            1, MAX_IMAGES, value=4, step=1, label="Number of images", elem_id="num-images"
                        )
                        candidates = gr.Slider(1, MAX_CANDIDATES, value=start["candidates"], step=1, elem_id="candidates",
                                               label="Candidates per image (self-reranking keeps the best)")  # fmt: skip
                    with gr.Row():
                        guidance = gr.Slider(*GUIDANCE_RANGE, value=start["guidance_scale"], step=0.5, elem_id="guidance",
                                             label="Guidance (classifier-free; 1 = off)")  # fmt: skip
                        seed = gr.Number(
                            value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", elem_id="seed"
                        )
                    with gr.Row():
                        top_k = gr.Slider(0, demo.max_top_k, value=start["top_k"], step=1, elem_id="top-k",
                                          label="Top-k (0 = off)")  # fmt: skip
                        temperature = gr.Slider(*TEMPERATURE_RANGE, value=start["temperature"], step=0.05,
                                                elem_id="temperature", label="Temperature")  # fmt: skip
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=3):
                    status = gr.Markdown(elem_id="status")
                    preview = gr.Image(
                        label="Preview: the first candidate of each image, row by row",
                        type="pil",
                        interactive=False,
                        elem_id="preview",
                        height=160,
                    )
                    gallery = gr.Gallery(label="Images", columns=4, fit_columns=False, object_fit="contain",
                                         elem_id="gallery", format="png")  # fmt: skip
                    grid_download = gr.DownloadButton("Download the grid (PNG)", visible=False, elem_id="grid-download")
        with gr.Tab("Captioning"):
            with gr.Row():
                with gr.Column():
                    caption_image = gr.Image(
                        label="Image to caption", type="pil", sources=["upload", "clipboard"], elem_id="caption-image"
                    )
                    with gr.Row():
                        num_captions = gr.Slider(
                            1, MAX_CAPTIONS, value=4, step=1, label="Captions to sample", elem_id="num-captions"
                        )
                        caption_tokens = gr.Slider(1, MAX_CAPTION_TOKENS, value=start["caption_tokens"], step=1,
                                                   label="Caption length (tokens)", elem_id="caption-tokens")  # fmt: skip
                    caption_seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                    caption_button = gr.Button("Caption", variant="primary", elem_id="caption")
                with gr.Column():
                    captions = gr.Dataframe(headers=["caption", "score"], datatype=["str", "number"], interactive=False,
                                            label="Captions, best first (score: sum of the caption's log-probabilities)",
                                            elem_id="captions")  # fmt: skip
        if demo.sr_pipeline is not None:
            with gr.Tab("Super-resolution"):
                with gr.Row():
                    with gr.Column():
                        sr_image = gr.Image(label="Image to double", type="pil", sources=["upload", "clipboard"], elem_id="sr-image")
                        sr_prompt = gr.Textbox(label="Its caption (optional)", max_lines=1, max_length=MAX_PROMPT_CHARS, elem_id="sr-prompt")
                        sr_mode = gr.Radio(["magnify", "low-level"], value="magnify", elem_id="sr-mode",
                                           label="magnify: read at the model's size, doubled by nine windows; low-level: read at half, drawn whole")  # fmt: skip
                        sr_seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed")
                        sr_button = gr.Button("Double", variant="primary", elem_id="super-resolve")
                    with gr.Column():
                        sr_status = gr.Markdown(elem_id="sr-status")
                        sr_output = gr.Image(label="Twice the size", type="pil", interactive=False, elem_id="sr-output", format="png")
            sr_button.click(page.super_resolve, [sr_image, sr_prompt, sr_mode, sr_seed], [sr_output, sr_status],
                            api_name="super_resolve", concurrency_id="model")  # fmt: skip
        with gr.Tab("About the model"):
            gr.Markdown(demo.facts_markdown(), elem_id="facts")
            with gr.Accordion("Training card", open=False):
                gr.Markdown(demo.card_markdown())

        draw_inputs = [prompt, num_images, seed, guidance, candidates, top_k, temperature]
        page_outputs = [preview, gallery, grid_download, status]
        # all model work shares one concurrency group of 1: a second user waits in the queue
        for trigger in (generate_button.click, prompt.submit):
            trigger(page.draw_with_preview, draw_inputs, page_outputs, api_visibility="private", concurrency_id="model")
        gr.on(
            triggers=[],
            fn=page.draw_gallery,
            inputs=draw_inputs,
            outputs=gallery,
            api_name="generate",
            concurrency_id="model",
        )
        caption_button.click(page.caption, [caption_image, num_captions, caption_tokens, caption_seed], captions,
                             api_name="caption", concurrency_id="model")  # fmt: skip
    app.queue(default_concurrency_limit=1, max_size=64)
    return app


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(parser)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument(
        "--dtype", default="float32", choices=sorted(DTYPES), help="model weights' dtype (default: float32)"
    )
    sr_default = bundled_model_folder(BUNDLED_SR_MODEL)
    parser.add_argument("--sr_model", default=str(sr_default) if sr_default else None,
                        help="a super-resolution model folder for the Super-resolution tab (default: the bundled "
                        f"{BUNDLED_SR_MODEL} when it is there)")  # fmt: skip
    parser.add_argument("--no_sr", action="store_true", help="no Super-resolution tab")
    args = parser.parse_args(argv)
    if args.no_sr:
        args.sr_model = None
    for option, folder in (("--model", args.model), ("--sr_model", args.sr_model)):
        if folder is not None and not Path(folder).is_dir():
            parser.error(f"{option}: model folder not found: {folder}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    demo = CogViewDemo(args.model, device=args.device, dtype=DTYPES[args.dtype], sr_model_dir=args.sr_model)
    app = build_app(demo)
    # share=False: nothing leaves this machine; max_file_size bounds what an upload may cost
    app.launch(server_name=args.host, server_port=args.port, share=False, max_file_size="10mb", css=PAGE_CSS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
