import type { JobFate, OutcomeObserver } from '../dispatch/ports.js';
import { decodeJobRecord } from '../jobs/record.js';
import type { Ledger, LedgerChange } from '../ledger/index.js';

/**
 * The dispatcher's outcomes as ledger changes: the daemon's OutcomeObserver. The dispatcher
 * acks a settled job only once `beforeAck` resolved, i.e. once its change is in the ledger's
 * journal on disk (docs/LEDGER.md, "After a crash").
 */
export class LedgerObserver implements OutcomeObserver {
  /**
   * @param firstId the queue's next id when this process started: a job below it was queued by
   *   an earlier run, whose `queued` change may not have reached the journal before a crash, so
   *   its change carries what its record says (openid, key, kind, queued time).
   */
  constructor(
    private readonly ledger: Ledger,
    private readonly firstId: number,
  ) {}

  beforeAck(fates: readonly JobFate[]): Promise<void> {
    const now = Date.now();
    for (let i = 0; i < fates.length; i++) {
      const f = fates[i]!;
      const o = f.outcome;
      // the common case, cheapest: a delivered job queued by this process
      if (f.fate === 'sent' && o.msgid !== undefined && o.id >= this.firstId) this.ledger.sent(o.msgid, o.wechatMsgid, f.sends, now);
      else this.ledger.note(this.changeOf(f, now));
    }
    return this.ledger.commit();
  }

  private changeOf(f: JobFate, now: number): LedgerChange {
    const o = f.outcome;
    let change: LedgerChange;
    if (o.msgid === undefined || o.id < this.firstId) {
      const r = decodeJobRecord(f.payload);
      change = { msgid: r.m, state: 'queued', openid: r.o, key: r.t, kind: r.k, queuedAt: r.at, at: now };
    } else {
      change = { msgid: o.msgid, state: 'queued', at: now };
    }
    change.attempts = f.sends;
    switch (f.fate) {
      case 'sent':
        change.state = 'sent';
        change.wechatMsgid = o.wechatMsgid;
        change.errcode = 0;
        change.errmsg = 'ok';
        change.sentAt = now;
        break;
      case 'rejected':
      case 'dead':
        change.state = f.fate;
        change.errcode = o.errcode ?? -1;
        change.errmsg = o.errmsg ?? o.reason;
        change.finalAt = now;
        break;
      case 'retry':
        change.errcode = o.errcode ?? -1;
        change.errmsg = o.errmsg ?? o.reason;
        break;
    }
    return change;
  }
}
