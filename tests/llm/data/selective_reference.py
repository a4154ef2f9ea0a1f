#!/usr/bin/env python3
"""Independent float64 numpy reference for kvstream's InfiniGen speculation
(llm/selective.cpp), used by tests/llm/selective_test.cpp
(SpeculationMatchesIndependentReference): run it and compare with the values
checked in there.

Written from InfiniGen's public code (snu-comparch/InfiniGen), not from
kvstream's: skewing as speedup/infinigen/infinigen/skewing_controller.py
`skew` (per head SVD of the warm-up queries and keys, right singular vectors
of the query scattered to columns argsort(s_q * s_k)), here per KV head with
the group's query heads stacked (kvstream's GQA choice); RoPE before the skew
(accuracy/src/modeling_llama_ours.py); partial channels = top int(ratio *
head_dim) columns of |q A| summed over the prefill prompt
(partial_weight_index_generation); speculation of layer i+1 from layer i's
attention input (after its RMSNorm) as kv_selection_controller.py
`speculate_attention` (scores q.k/sqrt(d), count of scores > max - alpha per
query head, mean over heads, int, capped by the budget; top-k per KV head by
the max over its query heads: kvstream's GQA choice). Layers 0 and 1 full.

Usage: /usr/bin/python3 tests/llm/data/selective_reference.py
"""
import json, os, struct, sys

import numpy as np
np.set_printoptions(precision=6, suppress=True)
ROOT=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..')
MD=os.path.join(ROOT, 'models', 'default')
cfg=json.load(open(MD+'/config.json'))
f=open(MD+'/model.safetensors','rb'); n=struct.unpack('<Q',f.read(8))[0]; hdr=json.loads(f.read(n)); base=8+n
f.close(); raw=open(MD+'/model.safetensors','rb').read()
W={k:np.frombuffer(raw[base+v['data_offsets'][0]:base+v['data_offsets'][1]],dtype=np.float32).reshape(v['shape']).astype(np.float64) for k,v in hdr.items() if k!='__metadata__'}
L=cfg['num_hidden_layers']; H=cfg['num_attention_heads']; KVH=cfg['num_key_value_heads']; HD=cfg['head_dim']; G=H//KVH; eps=cfg['rms_norm_eps']
inv=1.0/(cfg['rope_theta']**(np.arange(0,HD,2)/HD))
def rope(x,pos):  # x [..., n, hd], pos [n]
    fr=np.outer(pos,inv); emb=np.concatenate([fr,fr],-1); c,s=np.cos(emb),np.sin(emb)
    rh=np.concatenate([-x[...,HD//2:],x[...,:HD//2]],-1); return x*c+rh*s
def rms(x,w): return x/np.sqrt((x*x).mean(-1,keepdims=True)+eps)*w
def lw(l,name): return W[f'model.layers.{l}.{name}.weight']
class Model:
    # forward over new tokens with cache K[l] [kvh, t, hd], V[l]; hook(l, h) before layer l's attention; mask_fn(l,q,k) -> [kvh, past] keep or None
    def forward(self, toks, cache, pre=None, sel=None):
        x=W['model.embed_tokens.weight'][toks]; n=len(toks); p0=cache['n']; pos=np.arange(p0,p0+n)
        for l in range(L):
            h=rms(x,lw(l,'input_layernorm'))
            if pre: pre(l,h)
            q=(h@lw(l,'self_attn.q_proj').T).reshape(n,H,HD).transpose(1,0,2); k=(h@lw(l,'self_attn.k_proj').T).reshape(n,KVH,HD).transpose(1,0,2)
            v=(h@lw(l,'self_attn.v_proj').T).reshape(n,KVH,HD).transpose(1,0,2)
            q=rope(q,pos); k=rope(k,pos)
            K=np.concatenate([cache['K'][l],k],1) if p0 else k; V=np.concatenate([cache['V'][l],v],1) if p0 else v
            cache['K'][l]=K; cache['V'][l]=V
            keep=sel(l,q,K) if sel else None
            s=np.einsum('gmnd,gtd->gmnt',q.reshape(KVH,G,n,HD),K)/np.sqrt(HD)
            causal=np.arange(p0+n)[None,:]>pos[:,None]
            s=np.where(causal[None,None],-np.inf,s)
            if keep is not None:  # [kvh, past]; current token always
                km=np.concatenate([keep,np.ones((KVH,1),bool)],1); s=np.where(km[:,None,None,:],s,-np.inf)
            s=s-s.max(-1,keepdims=True); p=np.exp(s); p/=p.sum(-1,keepdims=True)
            o=np.einsum('gmnt,gtd->gmnd',p,V).reshape(H,n,HD).transpose(1,0,2).reshape(n,H*HD)
            x=x+o@lw(l,'self_attn.o_proj').T
            h2=rms(x,lw(l,'post_attention_layernorm'))
            g=h2@lw(l,'mlp.gate_proj').T; u=h2@lw(l,'mlp.up_proj').T
            x=x+((g/(1+np.exp(-g)))*u)@lw(l,'mlp.down_proj').T
        cache['n']=p0+n
        x=rms(x,W['model.norm.weight']); return x@W['model.embed_tokens.weight'].T
def new_cache(): return {'n':0,'K':[None]*L,'V':[None]*L}
def copy_cache(c): return {'n':c['n'],'K':list(c['K']),'V':list(c['V'])}

def calibrate(warm, ratio):
    qs=[];ks=[]
    Model().forward(warm,new_cache(),sel=lambda l,q,K:(qs.append(q),ks.append(K),None)[2])
    A=[];CH=[]; nc=int(HD*ratio)
    for l in range(L):
        a_l=[];c_l=[]
        for g in range(KVH):
            qg=qs[l][g*G:(g+1)*G].reshape(-1,HD)
            _,sq,vqT=np.linalg.svd(qg,full_matrices=False); sk=np.linalg.svd(ks[l][g],compute_uv=False)
            ind=np.argsort(sq*sk,kind='stable'); a=np.zeros((HD,HD))
            a[:,ind]=vqT.T   # torch scatter(-1, ind, vq): a[:, ind[j]] = vq[:, j]
            mass=np.abs(qg@a).sum(0); c_l.append(np.sort(np.argsort(-mass,kind='stable')[:nc]))
            a_l.append(a)
        A.append(np.stack(a_l)); CH.append(np.stack(c_l))
    return A,CH

class Sel:
    def __init__(s,method,budget=0.2,alpha=4,A=None,CH=None,front=2,last_full=False,prefill_channels=False,nc=6):
        s.pc=prefill_channels;s.nc=nc;s.CH=list(CH) if CH is not None else None
        s.m=method;s.b=budget;s.a=alpha;s.A=A;s.front=front;s.lf=last_full;s.dec=False
        s.fet=np.zeros(L);s.rec=np.zeros(L);s.mass=np.zeros(L);s.steps=0;s.pk=[None]*L;s.spec=[None]*L
    def selects(s,l):
        if s.m=='full':return False
        if s.m=='infinigen':return l>=s.front and not(s.lf and l==L-1)
        return True
    def budget(s,past): return min(max(int(np.floor(s.b*past+1e-9)),1),past)
    def pre(s,l,h):
        nl=l+1
        if not s.dec or s.m!='infinigen' or nl>=L or not s.selects(nl):return
        past=s.pos
        q=(h@lw(nl,'self_attn.q_proj').T).reshape(1,H,HD).transpose(1,0,2)
        q=rope(q,np.array([past]))  # [H,1,HD]
        qa=np.einsum('gmnd,gde->gmne',q.reshape(KVH,G,1,HD),s.A[nl])[:,:,0,:]  # [kvh,G,hd]
        pq=np.take_along_axis(qa,s.CH[nl][:,None,:],2)
        pk=s.pk[nl]; assert pk.shape[1]==past
        att=np.einsum('gmc,gtc->gmt',pq,pk)/np.sqrt(HD)
        mx=att.max(-1,keepdims=True); cnt=(att>mx-s.a).sum(-1).mean()
        count=min(int(cnt),s.budget(past)); count=max(count,1)
        agg=att.max(1); keep=np.zeros((KVH,past),bool)
        for g in range(KVH): keep[g,np.argsort(-agg[g],kind='stable')[:count]]=True
        s.spec[nl]=keep
    def sel(s,l,q,K):
        if not s.dec:
            if s.m=='infinigen' and s.pc:
                qa=np.einsum('gmnd,gde->gmne',q.reshape(KVH,G,-1,HD),s.A[l]).reshape(KVH,-1,HD)
                s.CH[l]=np.stack([np.sort(np.argsort(-np.abs(qa[g]).sum(0),kind='stable')[:s.nc]) for g in range(KVH)])
            if s.m=='infinigen':
                s.pk[l]=np.take_along_axis(np.einsum('gtd,gde->gte',K,s.A[l]),s.CH[l][:,None,:],2)
            return None
        past=K.shape[1]-1
        ex=np.einsum('gmd,gtd->gmt',q.reshape(KVH,G,HD),K)/np.sqrt(HD)
        keep=None
        if s.selects(l):
            if s.m=='infinigen': keep=s.spec[l]
            elif s.m=='oracle':
                agg=ex[:,:,:past].max(1); keep=np.zeros((KVH,past),bool)
                for g in range(KVH): keep[g,np.argsort(-agg[g],kind='stable')[:s.budget(past)]]=True
        if s.m=='infinigen':
            s.pk[l]=np.concatenate([s.pk[l],np.take_along_axis(np.einsum('gtd,gde->gte',K[:,past:],s.A[l]),s.CH[l][:,None,:],2)],1)
        if keep is None:
            s.fet[l]+=1;s.rec[l]+=1;s.mass[l]+=1;return None
        agg=ex[:,:,:past].max(1); f=r=0
        for g in range(KVH):
            k=keep[g].sum(); f+=k/past; top=np.argsort(-agg[g],kind='stable')[:k]; r+=keep[g][top].sum()/k
        e=ex-ex.max(-1,keepdims=True); p=np.exp(e); p/=p.sum(-1,keepdims=True); p=p[:,:,:past]
        ms=((p*keep[:,None,:]).sum(-1)/p.sum(-1)).mean()
        s.fet[l]+=f/KVH;s.rec[l]+=r/KVH;s.mass[l]+=ms
        return keep
    def step(s,tok,cache):
        s.dec=True; s.spec=[None]*L
        lg=Model().forward(np.array([tok]),cache,pre=s.pre,sel=s.sel); s.pos+=1; s.steps+=1; return lg
    def prefill(s,toks,cache):
        s.dec=False; lg=Model().forward(np.array(toks),cache,sel=s.sel); s.pos=len(toks); return lg


def main():
    lines = open(os.path.join(ROOT, 'data', 'retrieval', 'contexts-2048.jsonl')).readlines()
    c0 = json.loads(lines[0]); c1 = json.loads(lines[1])
    warm = np.array(list(c0['context'].encode())[:384])
    ctx = list(c1['context'].encode())[:383]; steps = list(c1['context'].encode())[383:383 + 24]
    A, CH = calibrate(warm, 0.2)
    for prefill_channels in (True, False):
        s = Sel('infinigen', budget=0.2, alpha=4, A=A, CH=CH, prefill_channels=prefill_channels, nc=int(HD * 0.2))
        c = new_cache(); s.prefill(ctx, c)
        for t in steps: s.step(t, c)
        print('warmup_channels' if not prefill_channels else 'prefill channels',
              'fetched', (s.fet / s.steps).tolist(), 'recall', (s.rec / s.steps).tolist(),
              'mass', (s.mass / s.steps).tolist())

if __name__ == '__main__':
    main()
