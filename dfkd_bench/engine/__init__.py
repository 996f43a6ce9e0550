"""The shared DFKD engine: losses, label layouts, the bank, the KD loop, evaluation, timing, resume,
and the method API (`Method`, `GeneratorMethod`, `OnlineGeneratorMethod`). Method files import these
through `dfkd_bench.api`, which adds the registry, the hyper-parameter base and the one-line error."""

from ..models.hooks import (CONV_MAP, PENULTIMATE, ForwardRecorder, Tap, batch_statistics, batchnorm_names, input_of,
                            output_of)
from ..schedule import ReferenceSchedule, RoundInfo
from .augment import Normalize, roll_by, student_augment
from .bank import SyntheticBank, resize
from .generator_method import (GeneratorHparams, GeneratorMethod, GeneratorStep, GradientGroups, LatentGeneratorMethod,
                               LatentHparams, ParameterGroups, StudentPass, TeacherPass)
from .generators import ConvStack, DeepDecoder, LatentGenerator, SpatialLatentGenerator
from .labels import balanced_labels, random_labels
from .losses import (BNStatisticsLoss, adversarial_loss, js_divergence, kd_loss, negative_batch_entropy,
                     pseudo_label_ce, total_variation)
from .method import Method, MethodContext, StudentStep, SyntheticBatch
from .online import (OnlineGeneratorMethod, OnlineHparams, OnlineLatentGeneratorMethod, OnlineLatentHparams,
                     datafree_schedules, logit_discrepancy)
from .synthesis import BestIterate
from .run_record import CurvePoint, RunOutcome
from .trainer import Diverged, DistillationRun

__all__ = [
    "CONV_MAP", "PENULTIMATE", "ForwardRecorder", "Tap", "batch_statistics", "batchnorm_names", "input_of",
    "output_of",
    "ReferenceSchedule", "RoundInfo",
    "Normalize", "roll_by", "student_augment", "SyntheticBank", "resize",
    "GeneratorHparams", "GeneratorMethod", "GeneratorStep", "GradientGroups", "LatentGeneratorMethod", "LatentHparams",
    "ParameterGroups", "StudentPass", "TeacherPass",
    "ConvStack", "DeepDecoder", "LatentGenerator", "SpatialLatentGenerator",
    "balanced_labels", "random_labels",
    "BNStatisticsLoss", "adversarial_loss", "js_divergence", "kd_loss", "negative_batch_entropy", "pseudo_label_ce",
    "total_variation",
    "Method", "MethodContext", "StudentStep", "SyntheticBatch",
    "OnlineGeneratorMethod", "OnlineHparams", "OnlineLatentGeneratorMethod", "OnlineLatentHparams",
    "datafree_schedules", "logit_discrepancy", "BestIterate",
    "CurvePoint", "Diverged", "DistillationRun", "RunOutcome",
]
