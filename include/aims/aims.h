/*
 * aims.h -- the libaims umbrella header.
 *
 * libaims ("AI microservices") lets a host program preprocess data, train
 * models, optimize them and serve inference as services, in one process or over
 * many nodes, with the same calls. This header includes the whole public
 * contract; anything not declared under include/aims/ is private and may change
 * without notice.
 *
 * Start-up: optionally aims_set_allocator() and aims_set_log(), then use any
 * object. Check aims_version_number() == AIMS_VERSION_NUMBER (or at least the
 * same major) to detect a header/library mismatch.
 */
/** @file */
#ifndef AIMS_H
#define AIMS_H

#include "aims_core.h"
#include "aims_dataset.h"
#include "aims_pipeline.h"
#include "aims_model.h"
#include "aims_orch.h"
#include "aims_svc.h"
#include "aims_cancel.h"
#include "aims_optimize.h"
#include "aims_lifecycle.h"
#include "aims_events.h"
#include "aims_jobs.h"
#include "aims_tls.h"
#include "aims_policy.h"
#include "aims_ident.h"
#include "aims_http.h"
#include "aims_publish.h"
#include "aims_https.h"
#include "aims_dist.h"
#include "aims_train_mpi.h"

#endif /* AIMS_H */
