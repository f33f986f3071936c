"""A tiny training script for the integration tests: Lightning, then a Hugging Face Trainer.

Both train on CPU in seconds on random data made here. With ``resume`` as its argument it
resumes each from the run reused as ``prev`` and trains further; it prints the step counts
it ended at and how many steps this run took, one ``key=value`` per line, for the test to read.
"""

import os
import sys
import warnings

import fs_tracker

warnings.filterwarnings("ignore")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
RESUME = sys.argv[1:] == ["resume"]
prev = fs_tracker.get_artifact("prev", default="") if RESUME else ""


def lightning_part():
    import lightning.pytorch as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from studio_run.integrations.lightning import StudioCheckpointIO, studio_callbacks, studio_logger

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))

    class Regressor(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.steps_run = 0

        def training_step(self, batch, _index):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            self.steps_run += 1
            return loss

        def validation_step(self, batch, _index):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    epochs = 6 if RESUME else 3
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=studio_logger(), log_every_n_steps=1,
        plugins=[StudioCheckpointIO()], callbacks=studio_callbacks(monitor="val_loss", save_top_k=1),
        enable_progress_bar=False, enable_model_summary=False,
    )
    loader = DataLoader(data, batch_size=16)
    ckpt = os.path.join(prev, "last.ckpt") if RESUME else None
    model = Regressor()
    trainer.fit(model, loader, DataLoader(data, batch_size=64), ckpt_path=ckpt)
    print(f"lightning_steps={trainer.global_step}", flush=True)
    print(f"lightning_steps_run={model.steps_run}", flush=True)


def transformers_part():
    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    from studio_run.integrations.transformers import StudioCallback

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config)

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"input_ids": torch.randint(0, 50, (8,), generator=g), "labels": torch.tensor(i % 2)}

    args = TrainingArguments(
        output_dir=os.path.join(fs_tracker.get_model_directory(), "hf"), max_steps=8 if RESUME else 4,
        per_device_train_batch_size=8, save_strategy="steps", save_steps=2, save_total_limit=1,
        logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True,
    )
    class Counting(TrainerCallback):
        steps_run = 0

        def on_step_end(self, args, state, control, **kwargs):
            Counting.steps_run += 1

    trainer = Trainer(model=model, args=args, train_dataset=Data(), callbacks=[StudioCallback(), Counting()])
    resume = os.path.join(prev, "checkpoints", "latest") if RESUME else None
    trainer.train(resume_from_checkpoint=resume)
    print(f"transformers_steps={trainer.state.global_step}", flush=True)
    print(f"transformers_steps_run={Counting.steps_run}", flush=True)


lightning_part()
transformers_part()
print("done", flush=True)
